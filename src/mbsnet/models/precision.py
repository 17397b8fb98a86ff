"""Where reduced precision must not reach: the scan, the STFT pair and the mask product."""

from __future__ import annotations

import contextlib

import torch


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """A context that turns autocast off on `device` if it is on (else does nothing)."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def as_float32(t: torch.Tensor) -> torch.Tensor:
    """`t` in float32; a float32 tensor is returned as is, so an exported graph holds no
    no-op Cast (onnxconverter-common's float16 pass fails on such Casts feeding several nodes).
    """
    return t if t.dtype == torch.float32 else t.float()
