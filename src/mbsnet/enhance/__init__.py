"""Enhancement at three levels: tensors (`enhance_waveform`), files, and folders."""

from mbsnet.enhance.chunking import chunk_bounds, enhance_waveform
from mbsnet.enhance.files import (
    EnhanceReport,
    collect_inputs,
    enhance_file,
    enhance_paths,
    plan_outputs,
)

__all__ = [
    "EnhanceReport",
    "chunk_bounds",
    "collect_inputs",
    "enhance_file",
    "enhance_paths",
    "enhance_waveform",
    "plan_outputs",
]
