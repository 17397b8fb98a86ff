"""Metric discriminator and its loss: failed PESQ samples are masked, never logged as 0."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mbsnet.checkpoint import CheckpointError, model_from_checkpoint, save_checkpoint
from mbsnet.models import ARCHS, count_parameters
from mbsnet.models.discriminator import (
    DISCRIMINATORS,
    MIN_FRAMES,
    MetricDiscriminator,
    MetricDiscriminatorConfig,
    create_discriminator,
)
from mbsnet.train.discriminator_step import discriminator_loss

PARAM_CEILING = 200_000  # measured 181,650 at ndf=16 (spectral norm adds buffers only)


def _mags(batch: int = 4, frames: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    clean = torch.rand(batch, 257, frames) * 3
    enhanced = (clean + 0.3 * torch.randn_like(clean)).abs()
    return clean, enhanced


def _grads(disc: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    disc.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in disc.parameters()]


def test_shape_range_and_size():
    disc = MetricDiscriminator()
    out = disc(*_mags())
    assert out.shape == (4,)
    assert torch.all((out > 0) & (out < disc.config.beta))
    assert count_parameters(disc) <= PARAM_CEILING
    wide = MetricDiscriminator(MetricDiscriminatorConfig(ndf=32, pool="max"))
    assert count_parameters(wide) > 3 * count_parameters(disc)
    with pytest.raises(ValueError, match="frames"):
        disc(*_mags(frames=MIN_FRAMES - 1))
    with pytest.raises(ValueError, match="pool"):
        MetricDiscriminator(MetricDiscriminatorConfig(pool="mean"))


def test_registered_apart_from_enhancers(tmp_path):
    assert MetricDiscriminator.ARCH not in ARCHS
    assert MetricDiscriminator.ARCH in DISCRIMINATORS
    disc = create_discriminator({"ndf": 8, "spectral_norm": False})
    assert disc.config == MetricDiscriminatorConfig(ndf=8, spectral_norm=False)
    with pytest.raises(ValueError, match="width"):
        create_discriminator({"width": 8})
    path = tmp_path / "disc.pt"
    save_checkpoint(path, disc)
    with pytest.raises(CheckpointError, match="unknown architecture"):
        model_from_checkpoint(path)


def test_failed_sample_is_masked_exactly():
    torch.manual_seed(1)
    disc = MetricDiscriminator().eval()  # eval: no dropout, frozen spectral-norm vectors
    clean, enhanced = _mags()
    targets = torch.tensor([0.3, 0.5, float("nan"), 0.7])  # NaN: what PesqPool gives a failure
    valid = torch.tensor([True, True, False, True])
    result = discriminator_loss(disc, clean, enhanced, targets, valid)
    assert not result.skipped and result.num_valid == 3
    assert result.pesq_fail_rate == pytest.approx(0.25)
    got = _grads(disc, result.loss)
    assert all(torch.isfinite(g).all() for g in got)
    # Reference: clean pairs of the whole batch, enhanced pairs of the 3 valid samples alone.
    ref_disc = copy.deepcopy(disc)
    keep = valid.nonzero().squeeze(1)
    clean_term = (ref_disc(clean, clean) - 1).pow(2).mean()
    enhanced_term = (ref_disc(clean[keep], enhanced[keep]) - targets[keep]).pow(2).mean()
    want = _grads(ref_disc, clean_term + enhanced_term)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
    assert result.loss_enhanced == pytest.approx(enhanced_term.item(), rel=1e-5)
    alone = discriminator_loss(disc, clean[keep], enhanced[keep], targets[keep], valid[keep])
    assert alone.loss_enhanced == pytest.approx(result.loss_enhanced, rel=1e-5)
    assert result.log_items()["disc_loss"] == pytest.approx(result.loss_total)


def test_all_failed_skips_enhanced_term_and_logs_no_loss():
    disc = MetricDiscriminator()
    clean, enhanced = _mags()
    targets = torch.full((4,), float("nan"))
    result = discriminator_loss(disc, clean, enhanced, targets, torch.zeros(4, dtype=torch.bool))
    assert result.skipped and result.num_valid == 0 and result.pesq_fail_rate == 1.0
    assert result.loss_enhanced is None and result.loss_total is None
    items = result.log_items()
    assert "disc_loss" not in items and "disc_loss_enhanced" not in items
    assert items["disc_skipped"] == 1.0 and items["pesq_fail_rate"] == 1.0
    # The clean-clean term still trains (as in CMGAN), with finite gradients.
    grads = _grads(disc, result.loss)
    assert result.loss.item() == pytest.approx(result.loss_clean) and result.loss_clean > 0
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_rejects_bad_targets_and_runs_in_float32_under_bf16():
    disc = MetricDiscriminator()
    clean, enhanced = _mags(2)
    with pytest.raises(ValueError, match="not finite"):
        discriminator_loss(
            disc, clean, enhanced, torch.tensor([0.5, float("nan")]), torch.ones(2, dtype=bool)
        )
    with pytest.raises(ValueError, match="must be"):
        discriminator_loss(disc, clean, enhanced, torch.zeros(3), torch.ones(3, dtype=bool))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = discriminator_loss(
            disc, clean, enhanced, torch.tensor([0.4, 0.6]), torch.ones(2, dtype=bool)
        )
    assert out.loss.dtype == torch.float32 and math.isfinite(out.loss.item())
