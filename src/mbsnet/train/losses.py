"""Generator losses of the CMGAN recipe, computed at the normalized level.

Clean and enhanced audio are both multiplied by the noisy input's level scale c (the gain the
model itself applies, `mbsnet.models.level`), so every term is invariant to the input level and
the fixed epsilon below means the same thing for every file.

Terms (CMGAN, Cao et al. 2022; weights [0.1, 0.9, 0.2, 0.05]):

* ``ri``: distance between the real and imaginary parts of the *compressed* complex spectra,
  |X|^p e^{j angle X} with p = 0.3. CMGAN compresses the target and predicts in the compressed
  domain, so its RI term compares compressed spectra; we do the same.
* ``mag``: distance between compressed magnitudes |X|^p.
* ``time``: L1 between waveforms.
* ``metric``: MSE of the discriminator's prediction for (clean, enhanced) against 1.

CMGAN uses squared error for ``ri`` and ``mag``; this recipe defaults to L1 as specified for
mbsnet (``distance="mse"`` gives CMGAN's choice). Items zero-padded at the end are masked:
samples at or after an item's length, and STFT frames the unpadded item would not have, do
not count; both signals are zeroed after their length before the STFT.
All arithmetic runs in float32 with autocast disabled, so bf16 training cannot make it NaN.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from mbsnet.stft import STFT
from mbsnet.train.config import LossSection

_DEFAULTS = LossSection()  # the `[loss]` section's defaults are the one source of these values
COMPRESS_POWER = _DEFAULTS.compress_power
MAG_EPS = 1e-8
"""Added to |X|^2 inside the sqrt: |X| >= 1e-4 at unit input RMS, so d|X|^p/dX stays finite."""

TERMS = ("ri", "mag", "time", "metric")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator terms (defaults: CMGAN's, as in the `[loss]` section)."""

    ri: float = _DEFAULTS.ri
    mag: float = _DEFAULTS.mag
    time: float = _DEFAULTS.time
    metric: float = _DEFAULTS.metric


@dataclass
class GeneratorLoss:
    """The weighted total to back-propagate and what the training loop logs or reuses.

    Attributes:
        total: weighted sum of the computed terms (scalar tensor with graph).
        terms: detached float value of each computed term; ``metric`` is absent when no
            discriminator was given or its weight is 0 (not computed, so not logged as 0).
        clean_mag: compressed clean magnitude (B, F, T), no graph; padded frames hold the
            magnitude of silence (the signals are zeroed after their lengths).
        enhanced_mag: the same for the enhanced signal, with graph (the discriminator step
            detaches it).
    """

    total: torch.Tensor
    terms: dict[str, float]
    clean_mag: torch.Tensor
    enhanced_mag: torch.Tensor


def sample_mask(lengths: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Shape: lengths (B,) -> bool (B, N), True for samples n < length."""
    positions = torch.arange(num_samples, device=lengths.device)
    return positions < lengths.unsqueeze(-1)


def frame_mask(lengths: torch.Tensor, num_frames: int, hop: int) -> torch.Tensor:
    """Shape: lengths (B,) -> bool (B, T), True for t * hop <= length.

    These are the 1 + length // hop frames the STFT of the unpadded item has, so a batch
    without padding gives the same loss with or without `lengths`.
    """
    centres = torch.arange(num_frames, device=lengths.device) * hop
    return centres <= lengths.unsqueeze(-1)


def compress(spec: torch.Tensor, power: float, eps: float = MAG_EPS) -> torch.Tensor:
    """Magnitude-compressed complex spectrum |X|^p e^{j angle X} = X |X|^(p - 1).

    Shape: (B, 2, F, T) -> (B, 2, F, T). |X| is sqrt(re^2 + im^2 + eps): at X = 0 the value is
    0 and the gradient finite, where torch.abs(X) ** p would give inf/NaN gradients.
    """
    mag = (spec.pow(2).sum(1, keepdim=True) + eps).sqrt()
    return spec * mag.pow(power - 1.0)


def compressed_magnitude(spec: torch.Tensor, power: float, eps: float = MAG_EPS) -> torch.Tensor:
    """Shape: (B, 2, F, T) -> (|X|^2 + eps)^(p / 2), (B, F, T)."""
    return (spec.pow(2).sum(1) + eps).pow(power / 2)


def _masked_distance(
    a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None, distance: str
) -> torch.Tensor:
    """Mean |a - b| (or squared) over the elements where `mask` (broadcast to a) is True."""
    diff = a - b
    err = diff.abs() if distance == "l1" else diff.pow(2)
    if mask is None:
        return err.mean()
    mask = mask.expand_as(err)
    # where, not multiply: a non-finite value in the padding must not leak into the sum.
    return torch.where(mask, err, 0).sum() / mask.sum().clamp_min(1)


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Run `module` without recording gradients for its own parameters (inputs still get them).

    The generator's metric term must move the generator only; this also spares the
    discriminator a wasted weight-gradient computation.
    """
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _spectral_terms(
    clean: torch.Tensor,
    enhanced: torch.Tensor,
    stft: STFT,
    lengths: torch.Tensor | None,
    power: float,
    distance: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ri, mag, clean_mag, enhanced_mag) of normalized, padding-zeroed float32 signals."""
    clean_spec, enhanced_spec = stft(clean), stft(enhanced)
    fmask = None if lengths is None else frame_mask(lengths, clean_spec.shape[-1], stft.hop)
    ri_mask = None if fmask is None else fmask[:, None, None, :]
    mag_mask = None if fmask is None else fmask[:, None, :]
    ri = _masked_distance(
        compress(enhanced_spec, power), compress(clean_spec, power), ri_mask, distance
    )
    clean_mag = compressed_magnitude(clean_spec, power).detach()
    enhanced_mag = compressed_magnitude(enhanced_spec, power)
    mag = _masked_distance(enhanced_mag, clean_mag, mag_mask, distance)
    # CMGAN adds the real and imaginary errors: a mean per channel, summed.
    return 2.0 * ri, mag, clean_mag, enhanced_mag


def generator_loss(
    clean: torch.Tensor,
    enhanced: torch.Tensor,
    scale: torch.Tensor,
    stft: STFT,
    lengths: torch.Tensor | None = None,
    discriminator: nn.Module | None = None,
    weights: LossWeights = LossWeights(),  # frozen: safe as a default
    power: float = COMPRESS_POWER,
    distance: str = _DEFAULTS.distance,
) -> GeneratorLoss:
    """CMGAN generator loss at the normalized level.

    Args:
        clean: clean audio (B, N) at the input's level, zero-padded after `lengths`.
        enhanced: the model's output (B, N) at the input's level.
        scale: the noisy input's level scale c (B, 1), e.g. `level_scale(noisy, lengths)`.
        stft: the model's STFT (`model.stft`).
        lengths: valid samples per item (B,); None when no item is padded.
        discriminator: a `MetricDiscriminator`; None (or weights.metric == 0) drops the term.
        weights: term weights.
        power: magnitude compression exponent.
        distance: "l1" or "mse" for the ri and mag terms (time is always L1).
    Returns:
        A `GeneratorLoss`; `total` is float32 whatever the autocast state.
    """
    if distance not in ("l1", "mse"):
        raise ValueError(f"distance must be 'l1' or 'mse', got {distance!r}")
    if clean.shape != enhanced.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and enhanced {tuple(enhanced.shape)} differ")
    with torch.autocast(clean.device.type, enabled=False):
        scale = scale.float()
        clean_n, enhanced_n = clean.float() * scale, enhanced.float() * scale
        smask = None
        if lengths is not None:
            # Zero both signals after their end, so whatever the model wrote into the padding
            # reaches neither the frames straddling the end nor the gradient.
            smask = sample_mask(lengths, clean.shape[-1])
            clean_n, enhanced_n = torch.where(smask, clean_n, 0), torch.where(smask, enhanced_n, 0)
        ri, mag, clean_mag, enhanced_mag = _spectral_terms(
            clean_n, enhanced_n, stft, lengths, power, distance
        )
        values = {"ri": ri, "mag": mag, "time": _masked_distance(enhanced_n, clean_n, smask, "l1")}
        if discriminator is not None and weights.metric != 0:
            with frozen(discriminator):
                prediction = discriminator(clean_mag, enhanced_mag).float()
            values["metric"] = (prediction - 1.0).pow(2).mean()
        total = sum(getattr(weights, name) * value for name, value in values.items())
    logged = torch.stack([v.detach() for v in values.values()]).tolist()  # one device sync
    return GeneratorLoss(
        total=total,
        terms=dict(zip(values, logged, strict=True)),
        clean_mag=clean_mag,
        enhanced_mag=enhanced_mag,
    )
