"""The PyTorch implementation of `mbsnet.enhance.backend.Backend`, and a tensor-level helper."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mbsnet.enhance.chunking import enhance_array, frame_hop
from mbsnet.models import model_device
from mbsnet.models.level import level_scale

if TYPE_CHECKING:  # imported lazily below: mbsnet.stream imports this package
    from mbsnet.stream.torch_runner import TorchHopRunner


class ReferencedModel(nn.Module):
    """A model called as ``(wave, reference) -> enhanced``: the gain comes from `reference`.

    The one definition of that call, used by the PyTorch backend and recorded as the ONNX
    graph by `mbsnet.export`. A causal model keeps its own running level (it may not look at
    the rest of the file), so its reference goes unused. Shape: wave (B, n), reference (B, N)
    -> (B, n).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.causal = bool(getattr(model, "causal", False))

    def forward(self, wave: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if self.causal:
            return self.model(wave)
        return self.model(wave, level_scale(reference))


def _device_for(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is None:
        return model_device(model)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but is not available; use --device cpu")
    return device


class TorchBackend:
    """A PyTorch model as a backend: moved to `device` (default: where it is), in eval mode."""

    def __init__(self, model: nn.Module, device: str | torch.device | None = None) -> None:
        self.device = _device_for(model, device)
        self.model = model.to(self.device).eval()
        self.graph = ReferencedModel(self.model)
        self.min_samples = int(getattr(model, "min_samples", 1))
        self.hop = frame_hop(model)
        self.causal = bool(getattr(model, "causal", False))
        arch = getattr(model, "ARCH", type(model).__name__)
        self.description = f"PyTorch {arch} on {self.device}"

    @torch.inference_mode()
    def __call__(self, wave: np.ndarray, reference: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)).to(self.device)
        same = reference is wave
        ref = x if same else torch.from_numpy(np.asarray(reference, np.float32)).to(self.device)
        return self.graph(x, ref).float().cpu().numpy()

    def release_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def hop_runner(self) -> TorchHopRunner:
        """The model's one-hop step (causal models: long signals stream through it)."""
        from mbsnet.stream.torch_runner import TorchHopRunner

        return TorchHopRunner(self.model)


def enhance_waveform(
    model: nn.Module,
    wave: torch.Tensor,
    chunk_seconds: float | None = None,
    overlap_seconds: float = 1.0,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """`mbsnet.enhance.chunking.enhance_array` for a PyTorch model and tensors.

    Args:
        model: model with ``forward(wave (B, N), scale (B, 1))`` and `min_samples`; moved to
            `device` (None: where its parameters are) and put in eval mode.
        wave: audio at 16 kHz, (C, N); stays on the CPU, only one chunk at a time is moved.
        chunk_seconds, overlap_seconds: see `enhance_array`.

    Returns:
        The enhanced (C, N) float32 signal on the CPU.
    """
    array = wave.detach().to("cpu", torch.float32).numpy()
    backend = TorchBackend(model, device)
    return torch.from_numpy(enhance_array(backend, array, chunk_seconds, overlap_seconds))
