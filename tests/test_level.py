"""The one level definition: active 20 ms frames, shared by training, inference and mixing."""

import numpy as np
import pytest
import torch

from mbsnet.models.level import FRAME, MIN_RMS, active_mean_square, level_scale
from mbsnet.train.mixing import active_power

SR = 16000


def _speech_with_pause(pause_seconds: float) -> torch.Tensor:
    torch.manual_seed(0)
    burst = 0.1 * torch.randn(SR)
    quiet = 1e-6 * torch.randn(int(pause_seconds * SR))  # -120 dB: never active
    return torch.cat([burst, quiet, burst]).unsqueeze(0)


def test_pauses_do_not_change_the_level():
    """Whole-signal RMS falls with every second of pause; the active level does not."""
    short, long = _speech_with_pause(0.5), _speech_with_pause(6.0)
    assert level_scale(short).item() == pytest.approx(level_scale(long).item(), rel=1e-3)
    rms = [x.pow(2).mean().rsqrt().item() for x in (short, long)]
    assert rms[1] > 1.5 * rms[0]  # what the old whole-signal definition did


def test_unit_active_rms_after_scaling():
    x = 0.03 * torch.randn(2, 3 * SR)
    scaled = x * level_scale(x)
    assert active_mean_square(scaled).squeeze().tolist() == pytest.approx([1.0, 1.0], rel=1e-4)


def test_lengths_ignore_padding_and_match_the_unpadded_signal():
    x = 0.1 * torch.randn(1, 12345)
    padded = torch.cat([x, 5.0 * torch.ones(1, 4000)], dim=1)  # garbage past the length
    want = level_scale(x)
    assert torch.allclose(level_scale(padded, torch.tensor([12345])), want, rtol=1e-6)
    batch = torch.cat([padded, 0.1 * torch.randn(1, 16345)])
    got = level_scale(batch, torch.tensor([12345, 16345]))
    assert torch.allclose(got[0], want[0], rtol=1e-6)
    assert torch.allclose(got[1], level_scale(batch[1:]), rtol=1e-6)


@pytest.mark.parametrize("level", [0.0, 1e-7])
def test_silence_gives_the_floor(level):
    c = level_scale(torch.full((1, 4 * FRAME + 7), level))
    assert c.item() == pytest.approx(1 / MIN_RMS)


def test_empty_signals_have_no_active_frames():
    assert active_mean_square(torch.zeros(2, 0)).tolist() == [[0.0], [0.0]]
    assert level_scale(torch.zeros(1, 0)).item() == pytest.approx(1 / MIN_RMS)
    x = 0.1 * torch.randn(2, 3 * FRAME)
    assert active_mean_square(x, torch.tensor([0, 3 * FRAME]))[0].item() == 0.0
    assert active_power(np.zeros(0, dtype=np.float32)) == 0.0


def test_mixing_snr_uses_the_same_definition():
    x = _speech_with_pause(2.0)
    assert active_power(x[0].numpy()) == pytest.approx(active_mean_square(x).item(), rel=1e-5)
    assert active_power(np.zeros(SR, dtype=np.float32)) == 0.0
