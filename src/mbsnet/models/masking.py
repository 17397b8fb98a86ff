"""The shared frame of every model here: level-normalize, STFT, estimate a mask, apply, iSTFT."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mbsnet import SAMPLE_RATE
from mbsnet.models.bands import BAND_WIDTHS_16K, BandLayout, BandSplit
from mbsnet.models.level import level_scale, running_level_scale, running_mean_square
from mbsnet.models.precision import as_float32, autocast_off
from mbsnet.stft import STFT
from mbsnet.tracing import is_exporting

MASK_TAPS = 3
"""BSRNN's complex mask spans frames t-1, t and t+1 of each bin."""


def apply_complex_mask(
    spec: torch.Tensor, mask: torch.Tensor, causal: bool = False
) -> torch.Tensor:
    """Filter each bin over time with a 3-tap complex mask.

    Y(t, f) = sum_tau M_tau(t, f) * X(t + tau - 1, f), products complex (frames t-1, t, t+1);
    causal: Y(t, f) = sum_tau M_tau(t, f) * X(t + tau - 2, f) (frames t-2, t-1, t).
    Shape: spec (B, 2, F, T), mask (B, 3, 2, F, T) -> (B, 2, F, T).
    """
    pad = (MASK_TAPS - 1, 0) if causal else (1, 1)
    return filter_taps(nn.functional.pad(spec, pad), mask)


def filter_taps_frame(window: torch.Tensor, mask: torch.Tensor, n_bins: int) -> torch.Tensor:
    """`filter_taps` for one output frame (streaming): frames t-2, t-1, t in, frame t out.

    Frames and mask taps are flat, real parts then imaginary, so the complex products are
    two element-wise products with the frames as they are and with real and imaginary parts
    swapped; the sums over taps come first (the same terms as `filter_taps`, summed in
    another order).
    n_bins (F) is passed, not read from a shape, so the traced graph holds a constant.
    Shape: window (B, 3, 2F), mask (B, 3, 2F) -> (B, 2F).
    """
    swapped = torch.cat([window[..., n_bins:], window[..., :n_bins]], dim=-1)
    direct = (mask * window).sum(1)  # (B, 2F): m_re x_re | m_im x_im
    crossed = (mask * swapped).sum(1)  # m_re x_im | m_im x_re
    real = direct[:, :n_bins] - direct[:, n_bins:]
    imag = crossed[:, :n_bins] + crossed[:, n_bins:]
    return torch.cat([real, imag], dim=-1)


def filter_taps(padded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The products of `apply_complex_mask` on a spectrum that already holds its edge frames.

    Output frame t uses padded frames t, t+1, t+2 with taps 0, 1, 2 (`filter_taps_frame` is
    the one-frame form the streamer uses).
    Shape: padded (B, 2, F, T + 2), mask (B, 3, 2, F, T) -> (B, 2, F, T).
    """
    n_frames = padded.shape[-1] - (MASK_TAPS - 1)  # not mask's: its T is baked in traces
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
    def causal(self) -> bool:
        """Whether the model is causal (config `causal`): see `forward`."""
        return bool(getattr(self.config, "causal", False))

    @property
    def lookahead(self) -> int:
        """Frames of lookahead of a causal model's mask (0 for a non-causal one)."""
        return int(getattr(self.config, "lookahead_frames", 0)) if self.causal else 0

    @property
    def min_samples(self) -> int:
        """Shortest input accepted: one STFT frame (a causal model takes any length >= 1)."""
        return 1 if self.causal else self.stft.n_fft

    @property
    def stream_delay(self) -> int:
        """Samples by which a causal model's streamed output lags its input.

        The output of one hop is final once the n_fft / hop - 1 frames overlapping it, and the
        lookahead frames after them, are in: (n_fft / hop - 1 + lookahead) * hop samples.
        """
        return self.stft.n_fft - self.stft.hop + self.lookahead * self.stft.hop

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency of a causal model: the window plus the lookahead, in samples.

        The first sample of each output hop waits for the stream delay plus the hop it arrives
        in (its own hop must be complete before the frame that ends with it is analysed).
        """
        return self.stream_delay + self.stft.hop

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
        if self.causal:
            if scale is not None:
                raise ValueError("a causal model keeps its own running level; pass no scale")
            return self._causal_forward(wave)
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

    def _causal_forward(self, wave: torch.Tensor) -> torch.Tensor:
        """The causal model on a whole signal: what `mbsnet.stream.Streamer` computes hop by hop.

        Causal framing (`STFT.causal_pad`: frame t ends with input hop t), the running level
        of the hops so far (`running_mean_square`), the network (causal when the config is:
        forward-only time layers, per-frame everything else), a mask over frames t-2..t, and
        a lookahead of L frames by reading output frame t from mask frame t + L. Output
        sample n depends on input samples before n + `stream_delay` + hop only.
        """
        hop, history = self.stft.hop, self.stft.n_fft - self.stft.hop
        batch, n = wave.shape[0], wave.shape[-1]
        with autocast_off(wave.device):
            padded = self.stft.causal_pad(as_float32(wave), self.lookahead)
            spec = self.stft.analyse(padded, exact=True)  # (B, 2, F, T)
            blocks = padded[:, history:].reshape(batch, -1, hop)  # hop t ends frame t
            mean_square, _, _ = running_mean_square(blocks)
            scale = running_level_scale(mean_square)[:, None, None, :]  # (B, 1, 1, T)
            normalized = spec * scale
        mask = self.estimate_mask(normalized)
        with autocast_off(wave.device):
            enhanced = apply_complex_mask(normalized, as_float32(mask), causal=True) / scale
            frames = self.stft.synthesize(enhanced[..., self.lookahead :])
            whole_hops = (blocks.shape[1] - self.lookahead) * hop  # >= n, a multiple of hop
            out = frames[:, history : history + whole_hops].reshape(batch, -1, hop)
            return (out / self.stft.steady_envelope()).reshape(batch, -1)[:, :n]
