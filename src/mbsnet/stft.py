"""The one STFT/iSTFT pair used by the models, losses, enhance, eval and export.

Both directions are written as (transposed) 1-D convolutions with a fixed Fourier basis rather
than `torch.stft`/`torch.istft`: measured here, `torch.istft` does not export to ONNX usably,
while a conv1d / conv_transpose1d pair exports with either exporter and matches `torch.istft`
to ~1e-6. Framing follows `torch.stft(center=True, pad_mode="reflect")` with a periodic Hann
window, so frame t is centred on sample t * hop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _fourier_bases(n_fft: int, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Analysis and synthesis kernels, each (2 * n_bins, 1, n_fft): real rows, then imaginary."""
    n_bins = n_fft // 2 + 1
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_bins, dtype=torch.float64)[:, None]
    phase = 2 * math.pi * k * n / n_fft
    win = window.to(torch.float64)
    analysis = torch.cat([torch.cos(phase) * win, -torch.sin(phase) * win])
    # Inverse real DFT: bins 1..n_fft/2-1 stand for their mirrored twins too, hence weight 2;
    # the imaginary parts of DC and Nyquist are ignored, as irfft does.
    weight = torch.full((n_bins, 1), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if n_fft % 2 == 0:
        weight[-1] = 1.0
    synthesis = torch.cat([torch.cos(phase), -torch.sin(phase)]) * torch.cat([weight, weight])
    synthesis = synthesis * win / n_fft
    return analysis.float().unsqueeze(1), synthesis.float().unsqueeze(1)


class STFT(nn.Module):
    """Short-time Fourier transform with an exact inverse.

    The spectrum is carried as real tensors laid out (B, 2, F, T): channel 0 real, 1 imaginary.
    The bases are non-persistent buffers, so checkpoints hold no STFT state.
    """

    def __init__(self, n_fft: int = 512, hop: int = 128) -> None:
        super().__init__()
        if n_fft % 2 or hop <= 0 or n_fft % hop:
            raise ValueError(f"need an even n_fft divisible by hop, got n_fft={n_fft}, hop={hop}")
        self.n_fft = n_fft
        self.hop = hop
        self.n_bins = n_fft // 2 + 1
        window = torch.hann_window(n_fft, periodic=True)
        analysis, synthesis = _fourier_bases(n_fft, window)
        self.register_buffer("analysis", analysis, persistent=False)
        self.register_buffer("synthesis", synthesis, persistent=False)
        self.register_buffer("window_sq", window.pow(2).view(1, 1, n_fft), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a signal of `num_samples` samples (centred framing)."""
        return 1 + num_samples // self.hop

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Analyse a batch of signals.

        Shape: wave (B, N) with N > n_fft // 2 -> spectrum (B, 2, F, T), T = 1 + N // hop.
        """
        pad = self.n_fft // 2
        padded = F.pad(wave.unsqueeze(1), (pad, pad), mode="reflect")
        frames = F.conv1d(padded, self.analysis, stride=self.hop)  # (B, 2F, T)
        # reshape with sizes read from the tensor: unflatten bakes B and T into an ONNX trace
        return frames.reshape(frames.shape[0], 2, self.n_bins, frames.shape[-1])

    def inverse(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Overlap-add synthesis, normalised by the summed squared window.

        Shape: spec (B, 2, F, T) -> wave (B, length).
        """
        n_frames = spec.shape[-1]
        frames = spec.flatten(1, 2)  # (B, 2F, T)
        wave = F.conv_transpose1d(frames, self.synthesis, stride=self.hop)  # (B, 1, L_pad)
        ones = torch.ones(1, 1, n_frames, dtype=spec.dtype, device=spec.device)
        envelope = F.conv_transpose1d(ones, self.window_sq, stride=self.hop)
        # With 75% overlap the envelope is >= 0.5 wherever a centred frame reaches; the floor
        # only guards the outermost padded samples, which are cropped away below.
        wave = wave / envelope.clamp_min(1e-8)
        start = self.n_fft // 2
        return wave[:, 0, start : start + length]
