"""Level normalization: models see their input at unit *active* RMS and return audio at its level.

One definition of level is used everywhere: training (each 2 s segment), inference (the whole
file, once, so chunks agree), the ONNX graph, and the SNR of training mixtures. It is the mean
power of the *active* 20 ms frames: frames within ACTIVE_RANGE_DB of the loudest frame and
above ACTIVE_FLOOR. Whole-signal RMS would count a file's pauses and a segment's would not, so
the same speech reached the model at different gains in training and at inference.

Causal models cannot wait for the whole signal: they use `running_mean_square`, the mean power
of the hops so far that lie above ACTIVE_FLOOR. It has no threshold relative to the loudest
part (that would need the future, or a running maximum the ONNX graph cannot scan) and never
forgets, so long pauses filled with room tone slowly lower the gain (measured: -70 dBFS tone in
10 s of pauses moved it 4 dB below the whole-file active level).

Written with tensor ops only (no Python branch on values or lengths), so it traces and exports
with dynamic batch and length.
"""

from __future__ import annotations

import torch

from mbsnet import SAMPLE_RATE

# RMS floor: a silent or near-silent input is scaled by at most 1/MIN_RMS, never by inf.
MIN_RMS = 1e-4
FRAME = SAMPLE_RATE // 50
"""20 ms frames for the activity measure."""
ACTIVE_RANGE_DB = 40.0
ACTIVE_FLOOR = 1e-8
"""-80 dBFS frame power: quieter frames never count as active."""


def active_mean_square(wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Mean power of the active 20 ms frames of each signal; 0 where no frame is active.

    Args:
        wave: (B, N) signals.
        lengths: (B,) valid samples per signal; samples past them never count (a partial
            last frame is averaged over its valid samples).
    Returns:
        (B, 1) mean square, in the input dtype.
    """
    n = wave.shape[-1]
    if lengths is None:
        lengths = torch.full(wave.shape[:1], n, device=wave.device)
    else:
        wave = torch.where(torch.arange(n, device=wave.device) < lengths.unsqueeze(-1), wave, 0.0)
    # Shape arithmetic only, so tracing keeps the length dynamic. One spare frame, dropped at
    # once, lets an empty signal reshape; the zero padding of `loudest` gives it a maximum.
    pad = (-n) % FRAME + FRAME
    x = torch.nn.functional.pad(wave, (0, pad))
    energy = x.pow(2).reshape(x.shape[0], -1, FRAME).sum(-1)[:, :-1]  # (B, M)
    starts = torch.arange(energy.shape[-1], device=wave.device) * FRAME
    count = (lengths.unsqueeze(-1) - starts).clamp(0, FRAME).to(wave.dtype)  # valid samples
    power = energy / count.clamp_min(1.0)
    heard = torch.nn.functional.pad(torch.where(count > 0, power, 0.0), (0, 1))
    loudest = heard.amax(-1, keepdim=True)
    threshold = (loudest * 10 ** (-ACTIVE_RANGE_DB / 10)).clamp_min(ACTIVE_FLOOR)
    active = (count > 0) & (power >= threshold) & (power > ACTIVE_FLOOR)
    weight = torch.where(active, count, 0.0)  # frames weighted by their valid samples
    total = (power * weight).sum(-1, keepdim=True)
    return total / weight.sum(-1, keepdim=True).clamp_min(1.0)


def level_scale(wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Scale c that brings the active level of `wave` to unit RMS (see the module docstring).

    Shape: wave (B, N), lengths (B,) -> c (B, 1). The mean square is floored at MIN_RMS**2,
    so digital silence gives a finite c (the model's output is then divided by the same c).
    """
    return torch.rsqrt(active_mean_square(wave, lengths).clamp_min(MIN_RMS**2))


def running_mean_square(
    blocks: torch.Tensor, total: torch.Tensor | None = None, count: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Causal level: the mean power of the active blocks seen so far, after each block.

    The causal models' running replacement for `active_mean_square`, which needs the whole
    signal. A block (one STFT hop of input) is active when its power exceeds ACTIVE_FLOOR; the
    estimate after block t averages the powers of the active blocks 0..t, and stays at 0 until
    the first active block. Offline and streaming use this one function: the streamer passes the
    running `total` and `count` of the blocks before, a whole signal starts from zero.

    Shape: blocks (B, T, hop), total and count (B, 1) -> (mean square (B, T), total (B, 1),
    count (B, 1)), the last two after block T-1.
    """
    power = blocks.pow(2).mean(-1)  # (B, T)
    active = (power > ACTIVE_FLOOR).to(power.dtype)
    totals = (power * active).cumsum(-1)
    counts = active.cumsum(-1)
    if total is not None and count is not None:
        totals, counts = totals + total, counts + count
    mean = totals / counts.clamp_min(1.0)
    return mean, totals[:, -1:], counts[:, -1:]


def running_level_scale(mean_square: torch.Tensor) -> torch.Tensor:
    """Scale c per block from `running_mean_square`, floored as `level_scale` is. Same shape."""
    return torch.rsqrt(mean_square.clamp_min(MIN_RMS**2))
