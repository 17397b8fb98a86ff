"""MBS-Net: band split, Mamba-2 over time within each band, an MLP mixer across bands, light mask.

Layout inside the encoder is (B, K, T, D): the time layer sees (B*K, T, D) as a free view and
the band mixer is one matmul over the K axis, so no block transposes its activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mbsnet.models.bands import BandLayout, BandToBins
from mbsnet.models.mamba2 import Mamba2
from mbsnet.models.masking import MASK_TAPS, MaskingEnhancer


@dataclass(frozen=True)
class MBSNetConfig:
    """Hyper-parameters of MBS-Net (all primitives, stored verbatim in checkpoints)."""

    n_fft: int = 512
    hop: int = 128
    d_model: int = 64
    n_layers: int = 5
    bidirectional: bool = True
    d_state: int = 16
    headdim: int = 32
    expand: int = 1
    d_conv: int = 4
    chunk_size: int = 32
    mixer_hidden: int = 64
    mask_hidden: int = 32
    causal: bool = False
    """Causal model (streamable): forward-only time layers, causal framing, running level."""
    lookahead_frames: int = 0
    """Causal only: frames of lookahead of the mask (0, 1 or 2; latency grows by one hop each)."""

    def __post_init__(self) -> None:
        if self.causal and self.bidirectional:
            raise ValueError("a causal MBS-Net needs bidirectional = false")
        if self.lookahead_frames not in (0, 1, 2):
            raise ValueError(f"lookahead_frames must be 0, 1 or 2, got {self.lookahead_frames}")
        if self.lookahead_frames and not self.causal:
            raise ValueError("lookahead_frames applies to a causal model only (causal = true)")


class BandMixer(nn.Module):
    """Cross-band mixing: a two-layer MLP along the band axis, shared by all channels and frames.

    Shape: (B, K, T, D) -> (B, K, T, D) (the residual is added by the caller).
    """

    def __init__(self, n_bands: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_bands, hidden)
        self.fc2 = nn.Linear(hidden, n_bands)
        self.act = nn.GELU()

    def frame(self, h: torch.Tensor) -> torch.Tensor:
        """`forward` on one frame (streaming). Shape: (B, K, D) -> (B, K, D)."""
        mixed = self.fc2(self.act(self.fc1(h.transpose(1, 2))))
        return mixed.transpose(1, 2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, k, t, d = h.shape
        flat = h.reshape(b, k, t * d)
        # baddbmm: weight product and bias in one pass, no broadcast copy of the weight's result
        mixed = torch.baddbmm(self.fc1.bias[:, None], self.fc1.weight.expand(b, -1, -1), flat)
        mixed = torch.baddbmm(
            self.fc2.bias[:, None], self.fc2.weight.expand(b, -1, -1), self.act(mixed)
        )
        return mixed.view(b, k, t, d)


class EncoderBlock(nn.Module):
    """Pre-norm residual block: Mamba-2 along time (optionally both directions), then BandMixer."""

    def __init__(self, config: MBSNetConfig, n_bands: int) -> None:
        super().__init__()
        d = config.d_model
        mamba_args = dict(
            d_state=config.d_state,
            d_conv=config.d_conv,
            expand=config.expand,
            headdim=config.headdim,
            chunk_size=config.chunk_size,
        )
        self.time_norm = nn.LayerNorm(d)
        self.time_forward = Mamba2(d, **mamba_args)
        self.time_backward = Mamba2(d, **mamba_args) if config.bidirectional else None
        self.band_norm = nn.LayerNorm(d)
        self.band_mixer = BandMixer(n_bands, config.mixer_hidden)

    def step(
        self, h: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One frame of a forward-only block (see `Mamba2.step` for the states).

        Shape: h (B, K, D) -> (B, K, D); states (B, K, ...) of the band sequences, updated.
        """
        bands = self.band_mixer.fc1.in_features
        y, conv_state, ssm_state = self.time_forward.step(
            self.time_norm(h), conv_state, ssm_state, lead=(bands,)
        )
        h = h + y
        return h + self.band_mixer.frame(self.band_norm(h)), conv_state, ssm_state

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, k, t, d = h.shape
        z = self.time_norm(h).view(b * k, t, d)
        y = self.time_forward(z)
        if self.time_backward is not None:
            y = y + self.time_backward(z.flip(1)).flip(1)
        h = h + y.view(b, k, t, d)
        return h + self.band_mixer(self.band_norm(h))


class MaskDecoder(nn.Module):
    """Light decoder: a shared bottleneck, then a per-band linear map to each bin's 3-tap mask.

    Shape: (B, K, T, D) -> mask (B, 3, 2, F, T).
    """

    def __init__(self, layout: BandLayout, d_model: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.bottleneck = nn.Linear(d_model, hidden)
        self.act = nn.GELU()
        self.to_bins = BandToBins(layout, hidden, MASK_TAPS * 2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        per_bin = self.to_bins(self.act(self.bottleneck(self.norm(h))))  # (B, 6, F, T)
        return per_bin.unflatten(1, (MASK_TAPS, 2))

    def frame(self, h: torch.Tensor) -> torch.Tensor:
        """`forward` on one frame (streaming): each tap's mask flat, real parts then imaginary.

        Shape: (B, K, D) -> mask (B, 3, 2F).
        """
        per_bin = self.to_bins.frame(self.act(self.bottleneck(self.norm(h))))  # (B, 6, F)
        return per_bin.reshape(-1, MASK_TAPS, 2 * self.to_bins.layout.n_bins)


class MBSNet(MaskingEnhancer):
    """Mamba band-split network for 16 kHz speech enhancement."""

    ARCH = "mbsnet"

    def __init__(self, config: MBSNetConfig | None = None) -> None:
        config = config or MBSNetConfig()
        super().__init__(config)
        self.encoder.extend(
            EncoderBlock(config, self.layout.n_bands) for _ in range(config.n_layers)
        )
        self.decoder = MaskDecoder(self.layout, config.d_model, config.mask_hidden)
