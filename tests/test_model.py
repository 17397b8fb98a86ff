"""MBS-Net and the BSRNN baseline: budgets, decoder share, shapes, level handling, band split."""

import pytest
import torch
from torch.nn import functional as F

from mbsnet.models import (
    DECODER_SHARE_LIMIT,
    PARAM_BUDGETS,
    PRESETS,
    count_parameters,
    create_model,
    preset_config,
)
from mbsnet.models.bands import BAND_WIDTHS_16K, BandLayout, BandSplit, BandToBins


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_within_budget_and_light_decoder(preset):
    model = create_model("mbsnet", preset_config(preset))
    total = count_parameters(model)
    assert total <= PARAM_BUDGETS[preset], f"{preset}: {total} > {PARAM_BUDGETS[preset]}"
    share = count_parameters(model.decoder) / total
    assert share <= DECODER_SHARE_LIMIT, f"{preset}: decoder holds {share:.1%}"


def test_every_preset_has_a_budget():
    assert set(PRESETS) == set(PARAM_BUDGETS)


def test_band_layout_covers_all_bins():
    assert sum(BAND_WIDTHS_16K) == 257
    assert len(BAND_WIDTHS_16K) == 31


@pytest.fixture(scope="module")
def tiny():
    return create_model("mbsnet", preset_config("tiny")).eval()


@pytest.mark.parametrize("length", [512, 513, 1000, 16000 + 77])
def test_output_has_input_shape(tiny, length):
    with torch.no_grad():
        out = tiny(torch.randn(2, length) * 0.1)
    assert out.shape == (2, length)
    assert torch.isfinite(out).all()


def test_too_short_input_is_refused(tiny):
    with pytest.raises(ValueError, match="at least 512"):
        tiny(torch.randn(1, 511))


@pytest.mark.parametrize("level", [0.0, 1e-12, 1e-6])
def test_silent_input_stays_finite(tiny, level):
    with torch.no_grad():
        out = tiny(torch.randn(1, 8000) * level)
    assert torch.isfinite(out).all()
    if level == 0.0:
        assert out.abs().max() == 0


def test_level_normalization_makes_output_scale_with_input(tiny):
    wave = torch.randn(1, 8000) * 0.05
    with torch.no_grad():
        quiet, loud = tiny(wave), tiny(wave * 20)
    torch.testing.assert_close(loud, quiet * 20, rtol=1e-4, atol=1e-6)


def test_explicit_scale_is_used(tiny):
    wave = torch.randn(1, 8000) * 0.05
    with torch.no_grad():
        default = tiny(wave)
        same = tiny(wave, scale=torch.rsqrt(wave.pow(2).mean(-1, keepdim=True)))
        other = tiny(wave, scale=torch.tensor([[3.0]]))
    torch.testing.assert_close(default, same)
    assert not torch.allclose(default, other)


def test_batch_items_are_independent(tiny):
    wave = torch.randn(2, 4000) * 0.1
    with torch.no_grad():
        both = tiny(wave)
        first = tiny(wave[:1])
    torch.testing.assert_close(both[:1], first, rtol=1e-4, atol=1e-6)


def test_gradients_reach_every_parameter():
    model = create_model("mbsnet", preset_config("tiny"))
    model(torch.randn(2, 4000)).pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


def test_bsrnn_same_interface():
    model = create_model("bsrnn").eval()
    assert (model.config.d_model, model.config.n_layers) == (64, 5)
    with torch.no_grad():
        out = model(torch.randn(1, 4000) * 0.1)
    assert out.shape == (1, 4000)
    assert torch.isfinite(out).all()


def test_create_model_rejects_unknown():
    with pytest.raises(ValueError, match="unknown architecture"):
        create_model("conformer")
    with pytest.raises(ValueError, match="not in mbsnet"):
        create_model("mbsnet", {"d_model": 32, "wings": 2})
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")


def test_config_dict_round_trip():
    from dataclasses import asdict

    config = preset_config("tiny")
    rebuilt = create_model("mbsnet", asdict(config))
    assert rebuilt.config == config


def test_band_split_equals_per_band_loop():
    layout = BandLayout(BAND_WIDTHS_16K, 257)
    split = BandSplit(layout, 8).double()
    with torch.no_grad():
        for p in (split.norm_weight, split.norm_bias, split.bias):
            p.normal_()
    spec = torch.randn(2, 2, 257, 5, dtype=torch.float64)
    expected, start = [], 0
    for k, width in enumerate(BAND_WIDTHS_16K):
        stop = start + width
        x = spec[:, :, start:stop].permute(0, 3, 2, 1).reshape(2, 5, 2 * width)
        x = F.layer_norm(
            x, (2 * width,), split.norm_weight[start:stop].reshape(-1),
            split.norm_bias[start:stop].reshape(-1), eps=1e-5,
        )
        expected.append(x @ split.weight[start:stop].reshape(2 * width, 8) + split.bias[k])
        start = stop
    torch.testing.assert_close(split(spec), torch.stack(expected, 1))


def test_band_to_bins_equals_per_bin_loop():
    layout = BandLayout(BAND_WIDTHS_16K, 257)
    head = BandToBins(layout, 8, 6).double()
    with torch.no_grad():
        head.bias.normal_()
    features = torch.randn(2, 31, 5, 8, dtype=torch.float64)
    expected, start = [], 0
    for k, width in enumerate(BAND_WIDTHS_16K):
        for b in range(start, start + width):
            expected.append(features[:, k] @ head.weight[b].T + head.bias[b])  # (B, T, 6)
        start += width
    expected = torch.stack(expected, 2).permute(0, 3, 2, 1)  # (B, 6, F, T)
    torch.testing.assert_close(head(features), expected)


def test_activation_checkpointing_gives_the_same_gradients():
    model = create_model("mbsnet", preset_config("tiny"))
    wave = torch.randn(2, 4000)

    def grads(flag):
        model.zero_grad()
        model.checkpoint_blocks = flag
        model(wave).pow(2).mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    for plain, recomputed in zip(grads(False), grads(True), strict=True):
        torch.testing.assert_close(recomputed, plain)
    assert "checkpoint_blocks" not in str(model.state_dict().keys())


def test_bf16_autocast_leaves_the_transforms_in_float32(tiny, monkeypatch):
    """With a pass-through mask the model is STFT + iSTFT: float32-exact even under autocast."""
    wave = 0.1 * torch.randn(2, 16000)

    def pass_through(spec):
        mask = torch.zeros(spec.shape[0], 3, 2, *spec.shape[2:])
        mask[:, 1, 0] = 1.0  # centre tap, real part: Y = X
        return mask.to(torch.bfloat16)  # what a bf16 network hands back

    monkeypatch.setattr(tiny, "estimate_mask", pass_through)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        out = tiny(wave)
    assert out.dtype == torch.float32
    assert (out - wave).abs().max() < 1e-5 * wave.abs().max()  # a bf16 transform: ~1e-2
