"""Level normalization: models see their input at unit RMS and return audio at its own level."""

from __future__ import annotations

import torch

# RMS floor: a silent or near-silent input is scaled by at most 1/MIN_RMS, never by inf.
MIN_RMS = 1e-4


def level_scale(wave: torch.Tensor) -> torch.Tensor:
    """Scale c = sqrt(N / sum(x^2)) that brings `wave` to unit RMS.

    Shape: wave (B, N) -> c (B, 1). The mean square is floored at MIN_RMS**2 so that digital
    silence gives a finite c (the model's output is then divided by the same c).
    """
    mean_square = wave.pow(2).mean(dim=-1, keepdim=True)
    return torch.rsqrt(mean_square.clamp_min(MIN_RMS**2))
