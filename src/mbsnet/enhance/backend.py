"""What runs the network: one small interface, implemented by PyTorch and by onnxruntime.

The file loop (`mbsnet.enhance.files`), chunking (`mbsnet.enhance.chunking`) and evaluation
(`mbsnet.eval.pipeline`) only ever call a `Backend`, so the PyTorch and ONNX paths share every
line of them. This module imports no torch: the ONNX paths never load it.

The level reference: models normalize their input to a level computed from a signal (their
`level_scale`). A chunk must get the gain of the whole file, not its own, so every call passes
the chunk *and* the signal whose level sets the gain (the whole file). Passing the reference
rather than a precomputed scale keeps the level computation inside the model (and inside the
exported graph), with no second implementation of it for runtimes without PyTorch.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

import numpy as np

_OOM_MESSAGES = ("out of memory", "can't allocate memory", "failed to allocate")


class Backend(Protocol):
    """An enhancement network behind plain float32 arrays.

    Attributes: description (one line naming the model and where it runs), min_samples
    (shortest input accepted), hop (STFT hop in samples; chunk starts are kept on its
    multiples).
    """

    description: str
    min_samples: int
    hop: int

    def __call__(self, wave: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Enhance `wave` at the level of `reference`.

        Shape: wave (B, n), reference (B, N) -> (B, n) float32; reference is the whole signal
        that `wave` is a chunk of (or `wave` itself).
        """
        ...

    def release_memory(self) -> None:
        """Give cached device memory back (before a retry after running out of it)."""
        ...


def is_torch_module(obj: Any) -> bool:
    """Whether `obj` is a torch.nn.Module, without importing torch (if torch was never
    imported, nothing can be one)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def as_backend(model: Any, device: Any = None) -> Backend:
    """`model` itself if it is a Backend; a PyTorch module wrapped as one on `device`.

    Raises:
        ValueError: `device` given for a backend that is already built, or an unusable device.
    """
    if is_torch_module(model):
        from mbsnet.enhance.torch_backend import TorchBackend

        return TorchBackend(model, device)
    if device is not None:
        raise ValueError("device applies to a PyTorch model; a backend already has its device")
    return model


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch, CUDA, onnxruntime and Python out-of-memory errors."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    # Allocator failures: torch raises RuntimeError, onnxruntime its own exception classes.
    allocator = isinstance(exc, RuntimeError) or type(exc).__module__.startswith("onnxruntime")
    return allocator and any(m in str(exc).lower() for m in _OOM_MESSAGES)
