"""Counted MACs and per-module parameter tables."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mbsnet.info import count_macs_per_second, describe, parameters_by_module
from mbsnet.models import count_parameters, create_model, preset_config
from mbsnet.models.mamba2 import Mamba2


@pytest.fixture(scope="module")
def tiny():
    return create_model("mbsnet", preset_config("tiny")).eval()


def test_table_sums_to_total(tiny):
    table = parameters_by_module(tiny)
    assert sum(table.values()) == count_parameters(tiny)


def test_macs_are_counted_per_second(tiny):
    # Every counted op is linear in the number of frames, so the per-second figure barely
    # moves with the probe length (edges aside).
    short = count_macs_per_second(tiny, seconds=2.0)
    long = count_macs_per_second(tiny, seconds=4.0)
    assert short > 0
    assert abs(short - long) / long < 0.02


def test_macs_cover_the_linear_layers(tiny):
    # Lower bound computed independently: every nn.Linear applied once per band and frame.
    frames_per_s = 16000 / tiny.config.hop
    bands = 31
    per_token = sum(
        m.in_features * m.out_features for n, m in tiny.named_modules()
        if isinstance(m, nn.Linear) and "encoder" in n and "mixer" not in n
    )
    assert count_macs_per_second(tiny) > per_token * bands * frames_per_s


def test_describe_records_source(tiny):
    assert describe(tiny, "preset tiny").source == "preset tiny"


def test_macs_count_the_causal_conv(tiny):
    """The depthwise conv (shifted addcmul) adds conv_dim * d_conv MACs per token and layer."""
    plain = FlopCounterMode(display=False)  # torch's own count misses addcmul
    with torch.inference_mode(), plain:
        tiny(torch.randn(1, 4 * 16000))
    without = round(plain.get_total_flops() / 2 / 4.0)
    layers = [m for m in tiny.modules() if isinstance(m, Mamba2)]
    frames = tiny.stft.num_frames(4 * 16000)
    per_token = sum(m.conv_dim * m.d_conv for m in layers)
    assert count_macs_per_second(tiny) - without == round(per_token * 31 * frames / 4.0)
