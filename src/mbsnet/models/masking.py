"""The shared frame of every model here: level-normalize, STFT, estimate a mask, apply, iSTFT."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mbsnet import SAMPLE_RATE
from mbsnet.models.bands import BAND_WIDTHS_16K, BandLayout, BandSplit
from mbsnet.models.level import level_scale
from mbsnet.models.precision import as_float32, autocast_off
from mbsnet.models.tracing import is_exporting
from mbsnet.stft import STFT

MASK_TAPS = 3
"""BSRNN's complex mask spans frames t-1, t and t+1 of each bin."""


def apply_complex_mask(spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Filter each bin over time with a 3-tap complex mask.

    Y(t, f) = sum_tau M_tau(t, f) * X(t + tau - 1, f), products complex.
    Shape: spec (B, 2, F, T), mask (B, 3, 2, F, T) -> (B, 2, F, T).
    """
    n_frames = spec.shape[-1]
    padded = nn.functional.pad(spec, (1, 1))
    shifted = torch.stack([padded[..., tap : tap + n_frames] for tap in range(MASK_TAPS)], dim=1)
    x_re, x_im = shifted[:, :, 0], shifted[:, :, 1]  # (B, 3, F, T)
    m_re, m_im = mask[:, :, 0], mask[:, :, 1]
    real = (m_re * x_re - m_im * x_im).sum(1)
    imag = (m_re * x_im + m_im * x_re).sum(1)
    return torch.stack([real, imag], dim=1)


class MaskingEnhancer(nn.Module):
    """Base class of the band-split models: STFT, band split, encoder blocks, mask decoder.

    Subclasses build `self.encoder` (blocks mapping (B, K, T, D) to the same shape) and
    `self.decoder` ((B, K, T, D) -> mask (B, 3, 2, F, T)) on top of `self.layout`.
    Class attributes: ARCH (registry name). Attributes: config (a dataclass of primitives
    with at least n_fft, hop and d_model).
    """

    ARCH: ClassVar[str]
    sample_rate: ClassVar[int] = SAMPLE_RATE

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.stft = STFT(config.n_fft, config.hop)
        self.layout = BandLayout(BAND_WIDTHS_16K, self.stft.n_bins)
        self.band_split = BandSplit(self.layout, config.d_model)
        self.encoder = nn.ModuleList()
        self.decoder: nn.Module = nn.Identity()
        # Activation checkpointing of whole encoder blocks (train.activation_checkpointing):
        # a runtime switch for small GPUs, not part of the architecture or the checkpoint.
        self.checkpoint_blocks = False

    @property
    def min_samples(self) -> int:
        """Shortest input accepted: one STFT frame."""
        return self.stft.n_fft

    def estimate_mask(self, spec: torch.Tensor) -> torch.Tensor:
        """Shape: normalized spectrum (B, 2, F, T) -> mask (B, 3, 2, F, T)."""
        h = self.band_split(spec)  # (B, K, T, D)
        recompute = self.checkpoint_blocks and torch.is_grad_enabled()
        for block in self.encoder:
            h = checkpoint(block, h, use_reentrant=False) if recompute else block(h)
        return self.decoder(h)

    def enhance_spectrum(self, spec: torch.Tensor) -> torch.Tensor:
        """Shape: normalized noisy spectrum (B, 2, F, T) -> enhanced spectrum (B, 2, F, T).

        Under autocast only the network runs in reduced precision; the mask is applied in
        float32, as the STFT pair around it runs (see `forward`).
        """
        mask = self.estimate_mask(spec)
        with autocast_off(spec.device):
            return apply_complex_mask(as_float32(spec), as_float32(mask))

    def forward(self, wave: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Enhance a batch of 16 kHz signals.

        Args:
            wave: noisy audio, (B, N), N >= min_samples.
            scale: level scale c per signal, (B, 1); defaults to `level_scale(wave)`. Chunked
                inference passes the whole file's c so that every chunk sees the same gain.
        Returns:
            Enhanced audio (B, N) at the input's level (the model output divided by c).
        """
        # Eager only: in an exported graph the length is symbolic and the check would be baked
        # in (or refused); ONNX callers read the minimum from the graph's metadata instead.
        if not is_exporting() and wave.shape[-1] < self.min_samples:
            raise ValueError(
                f"input has {wave.shape[-1]} samples; the model needs at least {self.min_samples}"
            )
        if scale is None:
            scale = level_scale(wave)
        # The transforms stay float32 under bf16 autocast: a bf16 STFT would quantize the input
        # spectrum and the output waveform (~3 significant digits) before any loss sees them.
        with autocast_off(wave.device):
            spec = self.stft(as_float32(wave) * scale)
        enhanced = self.enhance_spectrum(spec)
        with autocast_off(wave.device):
            return self.stft.inverse(enhanced, wave.shape[-1]) / scale
