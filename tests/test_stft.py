"""The conv-based STFT equals torch.stft and inverts exactly; its compiled FFT form equals it."""

import pytest
import torch

from mbsnet.stft import STFT


@pytest.mark.parametrize("length", [512, 513, 1000, 16000, 16127])
def test_matches_torch_stft(length):
    stft = STFT(512, 128)
    wave = torch.randn(3, length, dtype=torch.float64)
    ours = stft(wave.float()).double()
    ref = torch.stft(
        wave, 512, 128, window=torch.hann_window(512, periodic=True, dtype=torch.float64),
        center=True, pad_mode="reflect", return_complex=True,
    )
    assert ours.shape == (3, 2, 257, stft.num_frames(length))
    # The basis is float32: errors of a few 1e-6 relative to the spectrum's scale.
    tol = 1e-5 * ref.abs().max().item()
    torch.testing.assert_close(ours[:, 0], ref.real, atol=tol, rtol=0)
    torch.testing.assert_close(ours[:, 1], ref.imag, atol=tol, rtol=0)


@pytest.mark.parametrize("length", [512, 777, 16000, 16129])
def test_perfect_reconstruction(length):
    stft = STFT(512, 128)
    wave = torch.randn(2, length)
    back = stft.inverse(stft(wave), length)
    assert back.shape == wave.shape
    torch.testing.assert_close(back, wave, atol=2e-5, rtol=0)


def test_inverse_matches_torch_istft():
    stft = STFT(512, 128)
    spec = torch.randn(2, 2, 257, 40, dtype=torch.float64)
    spec[:, 1, 0] = 0  # DC and Nyquist are real in any real signal's spectrum
    spec[:, 1, -1] = 0
    length = 39 * 128
    ref = torch.istft(
        torch.complex(spec[:, 0], spec[:, 1]), 512, 128,
        window=torch.hann_window(512, periodic=True, dtype=torch.float64), center=True,
        length=length,
    )
    ours = stft.inverse(spec.float(), length).double()
    torch.testing.assert_close(ours, ref, atol=1e-5 * ref.abs().max().item(), rtol=0)


def test_fft_forms_match_the_convolutions_in_value_and_gradient():
    stft = STFT(512, 128)
    wave = torch.randn(2, 777 + 512, requires_grad=True)  # already padded: 1 + 777 // 128 frames
    spec = torch.randn(2, 2, 257, 9, requires_grad=True)
    conv = (stft.analyse(wave), stft.synthesize(spec))
    fft = (stft.analyse_fft(wave), stft.synthesize_fft(spec))
    for a, b in zip(conv, fft, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, atol=1e-5 * a.abs().max().item(), rtol=0)
    weights = [torch.randn_like(t) for t in conv]
    grads = []
    for outputs in (conv, fft):
        loss = sum((w * t).sum() for w, t in zip(weights, outputs, strict=True))
        grads.append(torch.autograd.grad(loss, (wave, spec)))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5 * a.abs().max().item(), rtol=0)


def test_compiled_round_trip_takes_the_fft_form_and_matches_eager():
    stft = STFT(512, 128)
    wave = torch.randn(2, 3000)
    calls = []
    original = stft.analyse_fft
    stft.analyse_fft = lambda padded: calls.append(1) or original(padded)
    compiled = torch.compile(lambda w: stft.inverse(stft(w), w.shape[-1]), fullgraph=True)
    torch.testing.assert_close(compiled(wave), stft.inverse(stft(wave), 3000), atol=2e-5, rtol=0)
    assert calls  # traced through the FFT form


def test_no_state_in_state_dict():
    assert STFT().state_dict() == {}


def test_exact_analysis_matches_and_is_the_same_for_one_frame_or_many():
    stft = STFT(512, 128)
    padded = torch.randn(2, 128 * 40) * 0.1
    exact = stft.analyse(padded, exact=True)
    torch.testing.assert_close(exact, stft.analyse(padded), atol=1e-5, rtol=1e-5)
    for t in (0, 17, 36):
        alone = stft.analyse(padded[:, t * 128 : t * 128 + 512], exact=True)
        assert (alone[..., 0] - exact[..., t]).abs().max() <= 1e-6 * exact.abs().max()
    # The streaming form (two-stage float64 DFT) agrees with the exact framing to the last bit
    # nearly everywhere: both are float64 results rounded once (the imaginary parts of DC and
    # Nyquist are zero but for ~1e-14 of float64 noise, which differs).
    frames = padded.unfold(-1, 512, 128)[:, :37]  # (B, 37, 512)
    streamed = stft.analyse_frame(frames.reshape(-1, 512)).reshape(2, 37, 2 * stft.n_bins)
    flat = exact.flatten(1, 2).transpose(1, 2)  # (B, T, 2F)
    nonzero = flat.abs() > 1e-9 * flat.abs().max()
    assert (streamed != flat)[nonzero].float().mean() < 1e-3
    assert (streamed - flat).abs().max() <= 1e-6 * flat.abs().max()


@pytest.mark.parametrize("n_fft, hop", [(512, 128), (256, 64), (510, 170), (34, 17), (2, 1)])
def test_single_frame_transforms_match_the_direct_bases(n_fft, hop):
    """FrameDFT / FrameIDFT in two stages, whatever the factors of n_fft (2: 1 x 2)."""
    stft = STFT(n_fft, hop)
    frame = torch.randn(3, n_fft, dtype=torch.float64)
    want = frame @ stft.analysis64.t()
    got = stft.frame_dft(frame)
    assert got.dtype == torch.float64
    assert (got - want).abs().max() <= 1e-12 * want.abs().max()
    spec = torch.randn(3, 2 * stft.n_bins)
    want = spec @ stft.synthesis[:, 0]
    torch.testing.assert_close(stft.synthesize_frame(spec), want, atol=1e-6, rtol=1e-5)
