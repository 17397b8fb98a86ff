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
        # The float32 basis held exactly in float64 for the exact framing (`analyse(exact=True)`,
        # `analyse_frame`): converted once here, not per call (a cast by `.float()` loses nothing).
        self.register_buffer("analysis64", analysis[:, 0].double(), persistent=False)
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
        return self.analyse(F.pad(wave.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1))

    def analyse(self, padded: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """Frames of an already padded signal: frame t covers padded[t*hop : t*hop + n_fft].

        exact: compute in float64 and round once to the input's dtype, so a frame comes out the
        same (to the last bit, nearly always) whether it is analysed alone or within a long
        signal; float32 convolutions of different sizes differ by ~1e-7, which a network's
        per-band normalization of quiet bands amplifies (measured: a streamed causal model fell
        to 97 dB SNR against its offline output, 124 dB with this). Needs L a multiple of hop.
        Shape: padded (B, L), L >= n_fft -> spectrum (B, 2, F, 1 + (L - n_fft) // hop).
        """
        if exact:
            return self._analyse_float64(padded)
        frames = F.conv1d(padded.unsqueeze(1), self.analysis, stride=self.hop)  # (B, 2F, T)
        # reshape with sizes read from the tensor: unflatten bakes B and T into an ONNX trace
        return frames.reshape(frames.shape[0], 2, self.n_bins, frames.shape[-1])

    def analyse_frame(self, frame: torch.Tensor) -> torch.Tensor:
        """`analyse(frame, exact=True)` of exactly one frame, as one float64 matmul (streaming).

        Rounded once to float32 like the exact framing, so it agrees with it (the float64
        sums differ only in order, far below float32's resolution).
        Shape: frame (B, n_fft) -> spectrum (B, 2, F, 1).
        """
        basis = self.analysis64.to(torch.float64)  # (2F, n_fft); a no-op unless cast
        spec = (frame.to(torch.float64) @ basis.t()).to(frame.dtype)  # (B, 2F)
        return spec.reshape(-1, 2, self.n_bins, 1)

    def _analyse_float64(self, padded: torch.Tensor) -> torch.Tensor:
        """`analyse` as n_fft / hop hop-sized float64 matmuls, shifted and summed.

        Frame t is the hops t .. t+k-1 (k = n_fft / hop), so its spectrum is the sum over j of
        hop t+j times the j-th hop-wide slice of the basis. Written with matmuls (no float64
        convolution, which onnxruntime lacks), the sum always in the same order.
        """
        batch, k = padded.shape[0], self.n_fft // self.hop
        blocks = padded.to(torch.float64).reshape(batch, -1, self.hop)  # (B, T + k - 1, hop)
        basis = self.analysis64.to(torch.float64)  # (2F, n_fft)
        n_frames = blocks.shape[1] - (k - 1)
        frames = blocks[:, :n_frames] @ basis[:, : self.hop].t()
        for j in range(1, k):
            hop_j = blocks[:, j : j + n_frames]
            frames = frames + hop_j @ basis[:, j * self.hop : (j + 1) * self.hop].t()
        frames = frames.to(padded.dtype).transpose(1, 2)  # (B, 2F, T)
        return frames.reshape(batch, 2, self.n_bins, frames.shape[-1])

    def synthesize(self, spec: torch.Tensor) -> torch.Tensor:
        """Overlap-add of the windowed inverse frames, not yet normalised by the envelope.

        Shape: spec (B, 2, F, T) -> (B, (T - 1) * hop + n_fft); frame t lands at t * hop.
        """
        frames = spec.flatten(1, 2)  # (B, 2F, T)
        return F.conv_transpose1d(frames, self.synthesis, stride=self.hop)[:, 0]

    def synthesize_frame(self, spec: torch.Tensor) -> torch.Tensor:
        """`synthesize` of exactly one frame, as one matmul (streaming).

        Shape: spec (B, 2, F, 1) -> (B, n_fft).
        """
        return spec.reshape(-1, 2 * self.n_bins) @ self.synthesis[:, 0]

    def steady_envelope(self) -> torch.Tensor:
        """The summed squared window where n_fft / hop frames overlap, per position in a hop.

        Shape: (hop,). Divides `synthesize`'s output wherever every overlapping frame exists
        (the causal framing and the streamer, `mbsnet.stream`).
        """
        return self.window_sq.view(self.n_fft // self.hop, self.hop).sum(0)

    def inverse(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Overlap-add synthesis, normalised by the summed squared window.

        Shape: spec (B, 2, F, T) -> wave (B, length).
        """
        n_frames = spec.shape[-1]
        wave = self.synthesize(spec)  # (B, L_pad)
        ones = torch.ones(1, 1, n_frames, dtype=spec.dtype, device=spec.device)
        envelope = F.conv_transpose1d(ones, self.window_sq, stride=self.hop)[:, 0]
        # With 75% overlap the envelope is >= 0.5 wherever a centred frame reaches; the floor
        # only guards the outermost padded samples, which are cropped away below.
        wave = wave / envelope.clamp_min(1e-8)
        start = self.n_fft // 2
        return wave[:, start : start + length]

    def causal_frames(self, num_samples: int, lookahead: int = 0) -> int:
        """Frames of the causal framing (`causal_analyse`) of `num_samples` samples."""
        return (num_samples + self.hop - 1) // self.hop + self.n_fft // self.hop - 1 + lookahead

    def causal_pad(self, wave: torch.Tensor, lookahead: int = 0) -> torch.Tensor:
        """Zero-pad for the causal framing: n_fft - hop zeros before, zeros after to the end.

        Frame t of the padded signal then covers input samples [(t+1)*hop - n_fft, (t+1)*hop):
        it ends with the t-th hop of input, as a stream delivers it, and the last frames (n_fft
        / hop - 1 + lookahead of them past the input) complete every input sample's overlap.
        Shape: wave (B, N) -> (B, n_fft - hop + causal_frames(N, lookahead) * hop).
        """
        n = wave.shape[-1]
        frames = self.causal_frames(n, lookahead)
        return F.pad(wave, (self.n_fft - self.hop, frames * self.hop - n))
