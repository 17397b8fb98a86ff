"""CMGAN-style metric discriminator: predicts the normalized PESQ of an (clean, enhanced) pair.

Not an enhancer: it is absent from `mbsnet.models.ARCHS` (so `create_model` and
`model_from_checkpoint` refuse it) and has its own registry, `DISCRIMINATORS`.

Layout as CMGAN's: the two compressed magnitudes as 2 channels, four blocks of a stride-2 4x4
Conv2d + InstanceNorm2d(affine) + PReLU, global pooling, Linear + Dropout + PReLU, Linear to 1,
and a learnable sigmoid beta * sigmoid(slope * x). Differences from CMGAN, on purpose:

* ``beta`` defaults to 1.2 (CMGAN's discriminator uses 1.0, MetricGAN+ uses 1.2): the targets
  reach (4.64 - 1) / 3.5 = 1.04 and the clean pair's target is 1, which a sigmoid capped at 1
  reaches only at infinite logits.
* pooling defaults to the average over time and frequency (CMGAN takes the maximum);
  ``pool="max"`` restores CMGAN's.
Spectral normalization of the conv and linear weights is kept as in CMGAN (``spectral_norm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

N_BLOCKS = 4
MIN_FRAMES = 2**N_BLOCKS
"""Each block halves time and frequency; fewer frames leave nothing to pool."""


@dataclass(frozen=True)
class MetricDiscriminatorConfig:
    """Hyper-parameters of the metric discriminator (primitives, stored in checkpoints)."""

    ndf: int = 16
    dropout: float = 0.3
    beta: float = 1.2
    spectral_norm: bool = True
    pool: str = "avg"


class LearnableSigmoid(nn.Module):
    """beta * sigmoid(slope * x) with a learnable slope per feature (initialised to 1)."""

    def __init__(self, features: int, beta: float) -> None:
        super().__init__()
        self.beta = beta
        self.slope = nn.Parameter(torch.ones(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.beta * torch.sigmoid(self.slope * x)


class MetricDiscriminator(nn.Module):
    """Predicts (PESQ - 1) / 3.5 of `enhanced` against `clean` from their magnitudes."""

    ARCH: ClassVar[str] = "metric_discriminator"
    IS_ENHANCER: ClassVar[bool] = False

    def __init__(self, config: MetricDiscriminatorConfig | None = None) -> None:
        super().__init__()
        config = config or MetricDiscriminatorConfig()
        if config.pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {config.pool!r}")
        if config.ndf < 1:
            raise ValueError(f"ndf must be positive, got {config.ndf}")
        self.config = config
        norm = _spectral_norm if config.spectral_norm else (lambda layer: layer)
        layers: list[nn.Module] = []
        channels = 2
        for block in range(N_BLOCKS):
            width = config.ndf * 2**block
            # No conv bias: the affine InstanceNorm right after has its own.
            conv = nn.Conv2d(channels, width, kernel_size=4, stride=2, padding=1, bias=False)
            layers += [norm(conv), nn.InstanceNorm2d(width, affine=True), nn.PReLU(width)]
            channels = width
        self.features = nn.Sequential(*layers)
        pool = nn.AdaptiveAvgPool2d(1) if config.pool == "avg" else nn.AdaptiveMaxPool2d(1)
        self.head = nn.Sequential(
            pool,
            nn.Flatten(),
            norm(nn.Linear(channels, channels // 2)),
            nn.Dropout(config.dropout),
            nn.PReLU(channels // 2),
            norm(nn.Linear(channels // 2, 1)),
            LearnableSigmoid(1, config.beta),
        )

    def forward(self, clean_mag: torch.Tensor, enhanced_mag: torch.Tensor) -> torch.Tensor:
        """Predicted normalized PESQ.

        Shape: clean_mag, enhanced_mag (B, F, T) compressed magnitudes (T >= MIN_FRAMES)
        -> (B,).
        """
        if clean_mag.shape != enhanced_mag.shape or clean_mag.dim() != 3:
            raise ValueError(
                f"need two (B, F, T) magnitudes of one shape, got {tuple(clean_mag.shape)} "
                f"and {tuple(enhanced_mag.shape)}"
            )
        if min(clean_mag.shape[-2:]) < MIN_FRAMES:
            raise ValueError(
                f"need at least {MIN_FRAMES} frames and bins, got {tuple(clean_mag.shape[-2:])}"
            )
        pair = torch.stack([clean_mag, enhanced_mag], dim=1)  # (B, 2, F, T)
        return self.head(self.features(pair)).squeeze(-1)


DISCRIMINATORS: dict[str, tuple[type[nn.Module], type]] = {
    MetricDiscriminator.ARCH: (MetricDiscriminator, MetricDiscriminatorConfig),
}


def create_discriminator(
    config: MetricDiscriminatorConfig | dict[str, Any] | None = None,
) -> MetricDiscriminator:
    """Build a metric discriminator from a config dataclass, a plain dict (checkpoints) or None.

    Raises ValueError for fields the config does not have.
    """
    if isinstance(config, dict):
        from mbsnet.models import config_from_dict

        config = config_from_dict(MetricDiscriminatorConfig, config, "the discriminator")
    return MetricDiscriminator(config)
