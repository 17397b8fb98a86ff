"""Generator losses: level invariance, padding masks, finite gradients at silence, bf16 safety."""

from __future__ import annotations

import math

import pytest
import torch

from mbsnet.models.discriminator import MetricDiscriminator
from mbsnet.models.level import level_scale
from mbsnet.stft import STFT
from mbsnet.train.losses import (
    LossWeights,
    compress,
    compressed_magnitude,
    frame_mask,
    generator_loss,
)

N = 4096  # 33 frames: enough for the discriminator's 16-frame minimum


@pytest.fixture
def stft() -> STFT:
    return STFT()


def _signals(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    clean = torch.randn(batch, N) * 0.1
    noisy = clean + 0.05 * torch.randn(batch, N)
    enhanced = clean + 0.02 * torch.randn(batch, N)
    return clean, noisy, enhanced


def test_perfect_estimate_has_zero_loss(stft):
    clean, noisy, _ = _signals()
    loss = generator_loss(clean, clean.clone(), level_scale(noisy), stft)
    assert set(loss.terms) == {"ri", "mag", "time"}  # no discriminator: no metric term
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in loss.terms.values())


def test_invariant_to_input_level(stft):
    clean, noisy, enhanced = _signals()
    ref = generator_loss(clean, enhanced, level_scale(noisy), stft)
    for gain in (1e-3, 30.0):
        scaled = generator_loss(clean * gain, enhanced * gain, level_scale(noisy * gain), stft)
        for name, value in ref.terms.items():
            assert scaled.terms[name] == pytest.approx(value, rel=1e-4), (gain, name)


def test_total_is_weighted_sum_and_distance_option(stft):
    clean, noisy, enhanced = _signals()
    disc = MetricDiscriminator()
    weights = LossWeights(ri=0.3, mag=0.5, time=2.0, metric=0.7)
    loss = generator_loss(clean, enhanced, level_scale(noisy), stft, None, disc, weights)
    expected = sum(getattr(weights, name) * value for name, value in loss.terms.items())
    assert set(loss.terms) == {"ri", "mag", "time", "metric"}
    assert loss.total.item() == pytest.approx(expected, rel=1e-5)
    mse = generator_loss(clean, enhanced, level_scale(noisy), stft, distance="mse")
    assert mse.terms["time"] == pytest.approx(loss.terms["time"])  # time stays L1
    assert mse.terms["mag"] != pytest.approx(loss.terms["mag"])
    with pytest.raises(ValueError, match="distance"):
        generator_loss(clean, enhanced, level_scale(noisy), stft, distance="l2")


def test_compression_keeps_phase_and_compresses_magnitude():
    spec = torch.randn(2, 2, 5, 7) * 10
    out = compress(spec, 0.3)
    mag = spec.pow(2).sum(1).sqrt()
    assert torch.allclose(out.pow(2).sum(1).sqrt(), mag.pow(0.3), rtol=1e-4)
    assert torch.allclose(torch.atan2(out[:, 1], out[:, 0]), torch.atan2(spec[:, 1], spec[:, 0]))
    assert torch.allclose(compressed_magnitude(spec, 0.3), mag.pow(0.3), rtol=1e-4)


def test_padding_does_not_count(stft):
    clean, noisy, enhanced = _signals()
    lengths = torch.tensor([N, 2500])
    clean[1, 2500:] = 0.0
    noisy[1, 2500:] = 0.0
    scale = level_scale(noisy, lengths)
    garbage = enhanced.clone().requires_grad_(True)
    with torch.no_grad():
        garbage[1, 2500:] = 100.0 * torch.randn(N - 2500)
    tidy = enhanced.clone()
    tidy[1, 2500:] = 0.0
    a = generator_loss(clean, garbage, scale, stft, lengths)
    b = generator_loss(clean, tidy, scale, stft, lengths)
    assert a.terms == pytest.approx(b.terms, rel=1e-6)
    a.total.backward()
    assert torch.all(garbage.grad[1, 2500:] == 0)
    # The time term is an element mean over the valid samples only.
    c = scale * (tidy - clean)
    want = (c[0].abs().sum() + c[1, :2500].abs().sum()) / (N + 2500)
    assert a.terms["time"] == pytest.approx(want.item(), rel=1e-5)


def test_full_lengths_equal_no_mask_and_masks(stft):
    clean, noisy, enhanced = _signals()
    full = torch.tensor([N, N])
    a = generator_loss(clean, enhanced, level_scale(noisy), stft, full)
    b = generator_loss(clean, enhanced, level_scale(noisy), stft)
    assert a.terms == pytest.approx(b.terms, rel=1e-6)
    assert torch.allclose(level_scale(noisy, full), level_scale(noisy))
    padded = torch.cat([noisy[:1], torch.zeros(1, 1000)], dim=1)
    assert torch.allclose(level_scale(padded, torch.tensor([N])), level_scale(noisy[:1]))
    assert frame_mask(torch.tensor([255, 256]), 4, 128).tolist() == [
        [True, True, False, False],
        [True, True, True, False],
    ]
    assert frame_mask(full, stft.num_frames(N), stft.hop).all()


def test_silence_gives_finite_loss_and_gradients(stft):
    silent = torch.zeros(2, N)
    enhanced = torch.zeros(2, N, requires_grad=True)
    disc = MetricDiscriminator()
    loss = generator_loss(silent, enhanced, level_scale(silent), stft, discriminator=disc)
    loss.total.backward()
    assert math.isfinite(loss.total.item())
    assert all(math.isfinite(v) for v in loss.terms.values())
    assert torch.isfinite(enhanced.grad).all()
    # Silent clean against a non-silent estimate, and the reverse.
    for clean, est in ((silent, torch.randn(2, N)), (torch.randn(2, N), silent)):
        est = est.clone().requires_grad_(True)
        out = generator_loss(clean, est, level_scale(silent), stft, discriminator=disc)
        out.total.backward()
        assert math.isfinite(out.total.item()) and torch.isfinite(est.grad).all()


def test_metric_term_moves_the_generator_only(stft):
    clean, noisy, enhanced = _signals()
    enhanced.requires_grad_(True)
    disc = MetricDiscriminator()
    loss = generator_loss(clean, enhanced, level_scale(noisy), stft, discriminator=disc)
    loss.total.backward()
    assert enhanced.grad is not None and enhanced.grad.abs().sum() > 0
    assert all(p.grad is None for p in disc.parameters())
    assert all(p.requires_grad for p in disc.parameters())  # restored afterwards
    assert loss.enhanced_mag.requires_grad and not loss.clean_mag.requires_grad
    assert loss.clean_mag.shape == (2, stft.n_bins, stft.num_frames(N))


def test_bf16_autocast_computes_in_float32(stft):
    clean, noisy, enhanced = _signals()
    disc = MetricDiscriminator().eval()
    ref = generator_loss(clean, enhanced, level_scale(noisy), stft, discriminator=disc)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = generator_loss(clean, enhanced, level_scale(noisy), stft, discriminator=disc)
    assert out.total.dtype == torch.float32
    assert out.terms == pytest.approx(ref.terms, rel=1e-5)
