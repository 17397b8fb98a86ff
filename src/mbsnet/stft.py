"""The one STFT/iSTFT pair used by the models, losses, enhance, eval and export.

Both directions are written as (transposed) 1-D convolutions with a fixed Fourier basis rather
than `torch.stft`/`torch.istft`: measured here, `torch.istft` does not export to ONNX usably,
while a conv1d / conv_transpose1d pair exports with either exporter and matches `torch.istft`
to ~1e-6. Framing follows `torch.stft(center=True, pad_mode="reflect")` with a periodic Hann
window, so frame t is centred on sample t * hop.

Under torch.compile (the compiled training step) the same transforms run as rfft / irfft with
an overlap-add (`fold`) instead: equal to rounding, and measured faster there (a tiny model's
compiled step on 2 CPU threads: median 0.40-0.53 s with the convolutions, 0.36-0.38 s with
FFTs, same seed and batches; benchmarks/bench_train.py). Eager code and export keep the
convolutions, so inference results do not change.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mbsnet.tracing import is_compiling


def _fourier_bases(
    n_fft: int, window: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Analysis and synthesis kernels, each (2 * n_bins, 1, n_fft) float32 (real rows, then
    imaginary), and the analysis basis in float64 (2 * n_bins, n_fft), not rounded."""
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
    return analysis.float().unsqueeze(1), synthesis.float().unsqueeze(1), analysis


def _split_length(n: int) -> tuple[int, int]:
    """n = n1 * n2 with n1 <= n2 and n1 as close to sqrt(n) as possible (an even n_fft always
    has a factor: 2 at worst)."""
    n1 = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return n1, n // n1


class FrameDFT(nn.Module):
    """The windowed real DFT of single frames in float64, in two small stages (streaming).

    With n_fft = n1 * n2, sample n = n2 * a + b and bin k = k1 + n1 * k2, the DFT is n1-point
    DFTs over a (one matmul), a twiddle e^{-2 pi i b k1 / n_fft}, and n2-point DFTs over b (one
    matmul): ~n_fft * (n1 + n2) products from matrices of a few KB, where the direct product
    reads the whole (2F, n_fft) basis (2 MB in float64 at n_fft 512; measured in onnxruntime on
    one thread: 34 us per frame against 143 us). Exact arithmetic in float64, so the float32
    result agrees with the direct float64 sums of `STFT.analyse(exact=True)` (both are within
    ~1e-15 of the true DFT).
    """

    def __init__(self, n_fft: int, window: torch.Tensor) -> None:
        super().__init__()
        self.n_fft, self.n_bins = n_fft, n_fft // 2 + 1
        self.split = n1, n2 = _split_length(n_fft)
        tau = 2 * math.pi
        a, k1 = torch.arange(n1, dtype=torch.float64), torch.arange(n1, dtype=torch.float64)
        b = torch.arange(n2, dtype=torch.float64)
        k2 = torch.arange(n2 // 2 + 1, dtype=torch.float64)  # k <= n_fft/2 needs k2 <= n2/2
        first = tau * k1[:, None] * a[None] / n1  # (k1, a)
        self.register_buffer(
            "stage1", torch.cat([torch.cos(first), -torch.sin(first)]), persistent=False
        )  # (2 n1, n1): real rows of every k1, then imaginary
        twiddle = tau * k1[:, None] * b[None] / n_fft  # (k1, b)
        self.register_buffer("twiddle_cos", torch.cos(twiddle), persistent=False)
        self.register_buffer("twiddle_sin", -torch.sin(twiddle), persistent=False)
        second = tau * b[:, None] * k2[None] / n2  # (b, k2)
        cos, sin = torch.cos(second), -torch.sin(second)
        # [re, im] (.., 2 n2) @ this -> [re, im] of the n2-point DFTs (.., 2 (n2/2 + 1))
        self.register_buffer(
            "stage2",
            torch.cat([torch.cat([cos, sin], 1), torch.cat([-sin, cos], 1)]),
            persistent=False,
        )
        self.register_buffer("window", window.to(torch.float64), persistent=False)
        width = 2 * k2.numel()  # per k1 row: real k2 values, then imaginary
        k = torch.arange(self.n_bins)
        real = (k % n1) * width + k // n1
        self.register_buffer(
            "bin_order", torch.cat([real, real + k2.numel()]), persistent=False
        )  # flat position of bin k's real part, then of its imaginary part

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        """Shape: frame (B, n_fft) -> spectrum (B, 2F) in float64, real parts then imaginary."""
        n1, n2 = self.split
        x = (frame.to(torch.float64) * self.window.to(torch.float64)).reshape(-1, n1, n2)
        z = self.stage1.to(torch.float64) @ x  # (B, 2 n1, n2): rows re(k1), then im(k1)
        re, im = z[:, :n1], z[:, n1:]
        cos, sin = self.twiddle_cos.to(torch.float64), self.twiddle_sin.to(torch.float64)
        rotated = torch.cat([re * cos - im * sin, re * sin + im * cos], dim=-1)  # (B, n1, 2 n2)
        y = (rotated @ self.stage2.to(torch.float64)).reshape(-1, n1 * self.stage2.shape[1])
        return y[:, self.bin_order]


class FrameIDFT(nn.Module):
    """`STFT.synthesize` of single frames in two small stages (streaming), float32.

    The windowed inverse of the one-sided spectrum, y[n] = w[n] Re sum_k c_k X_k e^{2 pi i k n / N}
    (c_k = 1/N at DC and Nyquist, 2/N between), with n = n1 + n1_size * n2 and k = n2_size * k1
    + k2: n1_size-point transforms over k1 (one matmul of a gathered (2 K1, 2 n2_size) matrix
    holding each bin's real and imaginary part and their rotation), then per n1 a matmul with
    the twiddles and the window folded in. Matrices of ~130 KB instead of the (2F, n_fft) basis
    (1 MB).
    """

    def __init__(self, n_fft: int, window: torch.Tensor) -> None:
        super().__init__()
        self.n_fft, self.n_bins = n_fft, n_fft // 2 + 1
        self.split = n1_size, n2_size = _split_length(n_fft)
        n_k1 = (n_fft // 2) // n2_size + 1  # k1 values that hold a bin k <= n_fft / 2
        tau = 2 * math.pi
        k1 = torch.arange(n_k1, dtype=torch.float64)
        n1 = torch.arange(n1_size, dtype=torch.float64)
        first = tau * n1[:, None] * k1[None] / n1_size  # (n1, k1)
        self.register_buffer(
            "stage1", torch.cat([torch.cos(first), torch.sin(first)], 1).float(), persistent=False
        )  # (n1_size, 2 K1): [W_re | W_im]
        k2 = torch.arange(n2_size, dtype=torch.float64)
        n = n1[:, None] + n1_size * torch.arange(n2_size, dtype=torch.float64)[None]  # (n1, n2)
        phase = tau * k2[None, :, None] * n[:, None, :] / n_fft  # (n1, k2, n2)
        win = window.to(torch.float64)[n.long()][:, None, :]  # (n1, 1, n2)
        stage2 = torch.cat([torch.cos(phase) * win, -torch.sin(phase) * win], 1)
        self.register_buffer("stage2", stage2.float(), persistent=False)  # (n1, 2 n2_size, n2)
        weight = torch.full((self.n_bins,), 2.0 / n_fft, dtype=torch.float64)
        weight[0] = weight[-1] = 1.0 / n_fft
        self.register_buffer("bin_weight", weight.repeat(2).float(), persistent=False)
        # Gather index into [X_re, X_im, -X_re, -X_im, 0] (each F long, then one zero):
        # rows (part, k1), columns (part, k2) of [[X_re | X_im], [-X_im | X_re]].
        k = (n2_size * k1[:, None] + k2[None]).long()  # (K1, n2_size)
        zero = 4 * self.n_bins
        valid = k <= n_fft // 2

        def part(offset: int) -> torch.Tensor:
            return torch.where(valid, k + offset * self.n_bins, zero)

        top = torch.cat([part(0), part(1)], 1)
        bottom = torch.cat([part(3), part(0)], 1)
        self.register_buffer("gather_index", torch.cat([top, bottom]), persistent=False)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """Shape: flat spectrum (B, 2F), real parts then imaginary -> windowed frame (B, n_fft)."""
        n1_size, n2_size = self.split
        scaled = spec * self.bin_weight
        extended = torch.nn.functional.pad(torch.cat([scaled, -scaled], dim=-1), (0, 1))
        columns = extended[:, self.gather_index]  # (B, 2 K1, 2 n2_size)
        z = self.stage1 @ columns  # (B, n1, 2 n2_size): [Z_re | Z_im] per n1
        y = z.unsqueeze(2) @ self.stage2  # (B, n1, 1, n2)
        return y.reshape(-1, n1_size, n2_size).transpose(1, 2).reshape(-1, self.n_fft)


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
        analysis, synthesis, analysis64 = _fourier_bases(n_fft, window)
        self.register_buffer("analysis", analysis, persistent=False)
        # The exact framing (`analyse(exact=True)`) and `analyse_frame` compute in float64 with
        # the float64 basis, so the two agree to ~1e-15 before rounding once to float32.
        self.register_buffer("analysis64", analysis64, persistent=False)
        self.frame_dft = FrameDFT(n_fft, window)
        self.frame_idft = FrameIDFT(n_fft, window)
        self.register_buffer("synthesis", synthesis, persistent=False)
        self.register_buffer("window_sq", window.pow(2).view(1, 1, n_fft), persistent=False)
        self.register_buffer("window", window, persistent=False)  # the FFT forms' window

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
        if is_compiling():
            return self.analyse_fft(padded)
        frames = F.conv1d(padded.unsqueeze(1), self.analysis, stride=self.hop)  # (B, 2F, T)
        # reshape with sizes read from the tensor: unflatten bakes B and T into an ONNX trace
        return frames.reshape(frames.shape[0], 2, self.n_bins, frames.shape[-1])

    def analyse_frame(self, frame: torch.Tensor) -> torch.Tensor:
        """`analyse(frame, exact=True)` of exactly one frame (streaming), by `FrameDFT`.

        Rounded once to float32 like the exact framing, so it agrees with it (both float64
        results are within ~1e-15 of the true DFT, far below float32's resolution).
        Shape: frame (B, n_fft) -> spectrum (B, 2F), real parts then imaginary.
        """
        return self.frame_dft(frame).to(frame.dtype)

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
        if is_compiling():
            return self.synthesize_fft(spec)
        frames = spec.flatten(1, 2)  # (B, 2F, T)
        return F.conv_transpose1d(frames, self.synthesis, stride=self.hop)[:, 0]

    def analyse_fft(self, padded: torch.Tensor) -> torch.Tensor:
        """`analyse` by rfft of the windowed frames (the compiled form). Same shapes."""
        frames = padded.unfold(-1, self.n_fft, self.hop) * self.window  # (B, T, n_fft)
        spec = torch.view_as_real(torch.fft.rfft(frames, dim=-1))  # (B, T, F, 2)
        return spec.permute(0, 3, 2, 1)

    def synthesize_fft(self, spec: torch.Tensor) -> torch.Tensor:
        """`synthesize` by irfft and a windowed overlap-add (the compiled form). Same shapes.

        irfft ignores the imaginary parts of DC and Nyquist, as the synthesis basis does.
        """
        bins = torch.complex(spec[:, 0], spec[:, 1]).transpose(1, 2)  # (B, T, F)
        frames = torch.fft.irfft(bins, n=self.n_fft, dim=-1) * self.window  # (B, T, n_fft)
        length = (frames.shape[1] - 1) * self.hop + self.n_fft
        wave = F.fold(frames.transpose(1, 2), (1, length), (1, self.n_fft), stride=(1, self.hop))
        return wave.view(frames.shape[0], length)

    def synthesize_frame(self, spec: torch.Tensor) -> torch.Tensor:
        """`synthesize` of exactly one frame (streaming), by `FrameIDFT`.

        Shape: flat spectrum (B, 2F), real parts then imaginary -> (B, n_fft).
        """
        return self.frame_idft(spec)

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
