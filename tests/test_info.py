"""Counted MACs and per-module parameter tables."""

import pytest
from torch import nn

from mbsnet.info import count_macs_per_second, describe, parameters_by_module
from mbsnet.models import count_parameters, create_model, preset_config


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
