"""Causal MBS-Net and its streamer: causality, and hop-by-hop output equal to the offline one."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from mbsnet.cli import main
from mbsnet.models import create_model, preset_config
from mbsnet.models.mbsnet import MBSNetConfig
from mbsnet.stream import Streamer
from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "noisy_p232_005.wav"


def snr_db(want: np.ndarray, got: np.ndarray) -> float:
    error = np.sum((got.astype(np.float64) - want) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(np.sum(want**2) / error))


def causal_model(lookahead: int = 0, preset: str = "tiny-causal") -> torch.nn.Module:
    config = dataclasses.replace(preset_config(preset), lookahead_frames=lookahead)
    model = create_model("mbsnet", config).eval()
    with torch.no_grad():  # random weights, made less tame than the init so errors show
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model


def offline(model: torch.nn.Module, wave: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.atleast_2d(wave))).numpy()


def example(seconds: float) -> np.ndarray:
    wave, rate = sf.read(EXAMPLE, dtype="float32")
    assert rate == 16000
    return wave[: int(seconds * rate)]


@pytest.mark.parametrize("lookahead", [0, 1, 2])
def test_changing_the_future_changes_no_earlier_output(lookahead: int) -> None:
    model = causal_model(lookahead)
    hop, delay = model.stft.hop, model.stream_delay
    wave = example(1.0)
    base = offline(model, wave)[0]
    for cut in (3000, 3000 + 77, 9001):
        changed = wave.copy()
        changed[cut:] = np.random.default_rng(cut).normal(0, 0.3, len(wave) - cut)
        out = offline(model, changed)[0]
        # Output sample n sees input before (n // hop + 1) * hop + delay: never the cut.
        safe = cut // hop * hop - delay
        assert np.array_equal(out[:safe], base[:safe]), f"cut {cut}: output before {safe} moved"
        assert not np.allclose(out[safe : safe + 2 * hop], base[safe : safe + 2 * hop])


def test_bidirectional_model_is_not_causal_so_the_test_can_fail() -> None:
    model = create_model("mbsnet", preset_config("tiny")).eval()
    wave = example(1.0)
    changed = wave.copy()
    changed[9000:] = 0.0
    assert not np.array_equal(offline(model, changed)[0, :4000], offline(model, wave)[0, :4000])


@pytest.mark.parametrize("lookahead", [0, 1, 2])
def test_streamer_in_random_blocks_equals_offline(lookahead: int) -> None:
    model = causal_model(lookahead)
    wave = example(2.3)
    want = offline(model, wave)[0]
    streamer = Streamer(model)
    rng = np.random.default_rng(lookahead)
    pieces, start = [], 0
    while start < len(wave):
        size = int(rng.integers(1, 700))
        pieces.append(streamer.push(wave[start : start + size]))
        start += size
    pieces.append(streamer.flush())
    got = np.concatenate(pieces)
    assert got.shape == want.shape
    assert snr_db(want, got) >= 100.0
    returned_before_flush = sum(len(p) for p in pieces[:-1])
    assert len(wave) - returned_before_flush <= streamer.delay + streamer.hop


def test_streamer_channels_and_restart() -> None:
    model = causal_model(1)
    stereo = np.stack([example(1.0), example(1.0)[::-1].copy()])
    want = offline(model, stereo)
    streamer = Streamer(model, channels=2)
    got = np.concatenate([streamer.push(stereo[:, :5000]), streamer.push(stereo[:, 5000:]),
                          streamer.flush()], axis=1)  # fmt: skip
    assert min(snr_db(w, g) for w, g in zip(want, got, strict=True)) >= 100.0
    again = np.concatenate([streamer.push(stereo), streamer.flush()], axis=1)
    assert snr_db(got, again) >= 120.0  # flush started a fresh stream


def test_streamer_equals_offline_over_20_seconds_of_real_speech(shared_data) -> None:
    path = shared_data / "speech" / "asterisk_allison_16k" / "demo-congrats.wav"
    wave, rate = sf.read(path, dtype="float32")
    wave = wave[: 20 * rate]
    assert rate == 16000 and len(wave) == 20 * rate
    model = causal_model(0)
    streamer = Streamer(model)
    hop = streamer.hop
    pieces = [streamer.push(wave[i : i + hop]) for i in range(0, len(wave), hop)]
    got = np.concatenate([*pieces, streamer.flush()])
    assert snr_db(offline(model, wave)[0], got) >= 100.0


def test_short_inputs_and_silence() -> None:
    model = causal_model(0)
    for n in (1, 127, 128, 700):
        wave = example(1.0)[:n]
        streamer = Streamer(model)
        got = np.concatenate([streamer.push(wave), streamer.flush()])
        assert got.shape == (n,) and np.allclose(got, offline(model, wave)[0], atol=1e-6)
    silent = Streamer(model)
    out = np.concatenate([silent.push(np.zeros(4000, np.float32)), silent.flush()])
    assert np.isfinite(out).all() and np.abs(out).max() == 0


def test_non_causal_models_and_misuse_are_refused() -> None:
    with pytest.raises(ValueError, match="not a causal model"):
        Streamer(create_model("mbsnet", preset_config("tiny")))
    with pytest.raises(ValueError, match="bidirectional"):
        MBSNetConfig(causal=True)
    with pytest.raises(ValueError, match="causal model only"):
        MBSNetConfig(lookahead_frames=1)
    with pytest.raises(ValueError, match="0, 1 or 2"):
        MBSNetConfig(causal=True, bidirectional=False, lookahead_frames=3)
    model = causal_model(0)
    with pytest.raises(ValueError, match="pass no scale"):
        model(torch.zeros(1, 1000), torch.ones(1, 1))
    with pytest.raises(ValueError, match=r"expected \(1, n\)"):
        Streamer(model).push(np.zeros((2, 10), np.float32))


def test_latency_is_computed_from_the_framing() -> None:
    for lookahead in (0, 1, 2):
        model = causal_model(lookahead)
        stft = model.stft
        assert model.stream_delay == stft.n_fft - stft.hop + lookahead * stft.hop
        assert model.latency_samples == stft.n_fft + lookahead * stft.hop


def test_info_prints_the_computed_latency() -> None:
    result = CliRunner().invoke(main, ["info", "--preset", "base-causal", "--json"])
    assert result.exit_code == 0, result.output
    latency = json.loads(result.output)["latency"]
    model = create_model("mbsnet", preset_config("base-causal"))
    assert latency["algorithmic_latency_ms"] == 1000 * model.latency_samples / 16000 == 32.0
    assert latency["stream_delay_samples"] == model.stream_delay
    text = CliRunner().invoke(main, ["info", "--preset", "tiny-causal"]).output
    assert "algorithmic latency 32 ms = window 32 ms + lookahead 0 x 8 ms hop" in text
    assert "causal:" not in CliRunner().invoke(main, ["info", "--preset", "tiny"]).output


def test_streamer_shapes_bad_samples_and_timings() -> None:
    model = causal_model(0)
    wave = example(1.0)
    streamer = Streamer(model)
    first = streamer.push(wave[None, :5000])
    assert first.ndim == 2 and streamer.flush().ndim == 2  # flush answers like the last push
    with pytest.raises(ValueError, match="NaN or Inf"):
        streamer.push(np.array([0.1, np.nan], np.float32))
    assert len(streamer.hop_seconds) > 0
    streamer.reset()
    assert len(streamer.hop_seconds) == 0
    assert streamer.hop_seconds.maxlen is not None  # bounded, whatever the stream's length
    stereo = Streamer(model, channels=2)
    stereo.push(np.stack([wave, wave]))
    with pytest.raises(ValueError, match="2 channels"):
        stereo.flush(mono=True)


def test_long_signals_of_a_causal_model_are_streamed_not_chunked() -> None:
    from mbsnet.enhance.chunking import enhance_array
    from mbsnet.enhance.torch_backend import TorchBackend

    model = causal_model(1)
    wave = example(5.0)[None]
    whole = offline(model, wave)
    bounded = enhance_array(TorchBackend(model, "cpu"), wave, chunk_seconds=2.0)
    assert snr_db(whole[0], bounded[0]) >= 100.0  # chunks would restart the model's history
