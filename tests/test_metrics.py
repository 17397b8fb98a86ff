"""compute_metrics: published per-file values, error capture, extended metrics, worker use."""

from __future__ import annotations

import csv
import multiprocessing as mp
import pickle
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mbsnet.eval import EXTENDED_METRICS, METRICS, MetricResult, compute_metrics, si_sdr

# Tolerances of the issue against the published Python-port columns (py_*).
TOLERANCE = {"pesq": 1e-3, "csig": 0.02, "cbak": 0.02, "covl": 0.02, "ssnr": 0.05, "stoi": 0.005}
COLUMN = {"pesq": "py_PESQ_wb", "csig": "py_CSIG", "cbak": "py_CBAK", "covl": "py_COVL"}
COLUMN |= {"ssnr": "py_SSNR", "stoi": "py_STOI"}


@pytest.fixture(scope="module")
def speech(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    clean, _ = sf.read(shared_data / "vbd_test25" / "clean" / "p232_023.wav")
    noisy, _ = sf.read(shared_data / "vbd_test25" / "noisy" / "p232_023.wav")
    return clean, noisy


def test_vbd_published_values_all_metrics(shared_data):
    table = shared_data / "reference" / "vbd_published_noisy_metrics_for_our_files.csv"
    rows = {r["utt"]: r for r in csv.DictReader(table.open())}
    noisy_paths = sorted((shared_data / "vbd_test25" / "noisy").glob("*.wav"))
    assert len(noisy_paths) == 25
    for path in noisy_paths:
        clean, rate = sf.read(shared_data / "vbd_test25" / "clean" / path.name)
        noisy, _ = sf.read(path)
        result = compute_metrics(clean, noisy, rate)
        assert result.errors == {}
        assert tuple(result.values) == METRICS
        for name, tol in TOLERANCE.items():
            want = float(rows[path.stem][COLUMN[name]])
            assert result.values[name] == pytest.approx(want, abs=tol), (path.stem, name)


def _assert_missing(result: MetricResult, names, reason: str) -> None:
    for name in names:
        assert name not in result.values
        assert reason in result.errors[name], (name, result.errors[name])
        assert "\n" not in result.errors[name]


def test_silent_reference(speech):
    _, noisy = speech
    result = compute_metrics(np.zeros_like(noisy), noisy, extended=True)
    assert result.values == {}
    _assert_missing(result, METRICS + EXTENDED_METRICS, "silent reference")


def test_silent_enhanced(speech):
    clean, _ = speech
    result = compute_metrics(clean, np.zeros_like(clean), extended=True)
    _assert_missing(result, ("pesq", "stoi", "estoi", "si_sdr"), "silent enhanced")
    _assert_missing(result, ("csig", "cbak", "covl"), "needs PESQ: silent enhanced")
    assert result.values["ssnr"] == pytest.approx(0.0, abs=1e-9)  # error == signal: 0 dB


@pytest.mark.parametrize("seconds", [0.2, 0.3])
def test_too_short(speech, seconds):
    clean, noisy = speech
    n = int(seconds * 16000)
    start = 30000  # inside speech
    result = compute_metrics(clean[start : start + n], noisy[start : start + n])
    _assert_missing(result, ("stoi",), "too short for STOI")
    assert "ssnr" in result.values
    if seconds < 0.25:
        _assert_missing(result, ("pesq",), "too short for PESQ")
        _assert_missing(result, ("csig", "cbak", "covl"), "needs PESQ: too short")
    else:
        assert {"pesq", "csig", "cbak", "covl"} <= result.values.keys()


def test_too_short_for_ssnr():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(500) * 0.1
    result = compute_metrics(x, x + 0.01)
    _assert_missing(result, ("ssnr",), "too short for SSNR")


def test_library_errors_are_captured(speech):
    """pesq finds no utterance and pystoi too few frames once its silent frames are removed."""
    rng = np.random.default_rng(1)
    clean = np.zeros(16000)
    clean[8000:11000] = speech[0][20000:23000]  # 0.19 s of speech in 1 s of digital silence
    result = compute_metrics(clean, clean + 1e-3 * rng.standard_normal(16000))
    _assert_missing(result, ("pesq",), "NoUtterancesError")
    _assert_missing(result, ("stoi",), "after removing silent frames")


def test_invalid_inputs_raise(speech):
    clean, noisy = speech
    with pytest.raises(ValueError, match=rf"{clean.size}.*{clean.size - 5}"):
        compute_metrics(clean, noisy[:-5])
    with pytest.raises(ValueError, match="16000"):
        compute_metrics(clean, noisy, sample_rate=8000)
    with pytest.raises(ValueError, match="1-D"):
        compute_metrics(np.stack([clean, clean]), np.stack([noisy, noisy]))


def test_non_finite_input_is_recorded(speech):
    clean, noisy = speech
    bad = noisy.copy()
    bad[100] = np.nan
    result = compute_metrics(clean, bad)
    assert result.values == {}
    _assert_missing(result, METRICS, "NaN or inf")


def test_extended_metrics(speech):
    clean, noisy = speech
    plain = compute_metrics(clean, noisy)
    extended = compute_metrics(clean, noisy, extended=True)
    assert tuple(plain.values) == METRICS
    assert tuple(extended.values) == METRICS + EXTENDED_METRICS
    assert 0.0 < extended.values["estoi"] < extended.values["stoi"] < 1.0
    assert extended.values["si_sdr"] == pytest.approx(si_sdr(clean, noisy))


def test_si_sdr_synthetic(speech):
    clean, _ = speech
    assert si_sdr(clean, 0.5 * clean) > 100.0  # a scaled copy: capped, not inf
    rng = np.random.default_rng(2)
    noise = rng.standard_normal(clean.size)
    centred = clean - clean.mean()
    noise *= np.sqrt(np.sum(centred**2) / np.sum(noise**2) / 10.0)  # 10 dB SNR
    assert si_sdr(clean, clean + noise) == pytest.approx(10.0, abs=0.1)
    assert si_sdr(clean, 3.0 * (clean + noise)) == pytest.approx(si_sdr(clean, clean + noise))


def test_picklable_and_torch_free(speech):
    clean, noisy = speech
    result = compute_metrics(clean, noisy)
    assert pickle.loads(pickle.dumps(result)) == result
    assert pickle.loads(pickle.dumps(compute_metrics)) is compute_metrics
    code = "import sys, mbsnet.eval; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_runs_in_spawned_worker(speech):
    clean, noisy = speech
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        remote = pool.submit(compute_metrics, clean, noisy).result()
    assert remote == compute_metrics(clean, noisy)
