"""Enhancement at three levels: arrays (`enhance_array`), files, and folders.

Importing this package loads no torch; `enhance_waveform` (tensors in and out) and the PyTorch
backend are imported on first use.
"""

from typing import Any

from mbsnet.enhance.backend import Backend, as_backend
from mbsnet.enhance.chunking import chunk_bounds, enhance_array
from mbsnet.enhance.files import (
    EnhanceReport,
    collect_inputs,
    enhance_file,
    enhance_paths,
    plan_outputs,
)

__all__ = [
    "Backend",
    "EnhanceReport",
    "as_backend",
    "chunk_bounds",
    "collect_inputs",
    "enhance_array",
    "enhance_file",
    "enhance_paths",
    "enhance_waveform",
    "plan_outputs",
]


def __getattr__(name: str) -> Any:
    if name == "enhance_waveform":
        from mbsnet.enhance.torch_backend import enhance_waveform

        return enhance_waveform
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
