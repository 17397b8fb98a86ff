"""Composite measures: vectorized WSS/LLR/SSNR against a per-frame loop, and the references."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.linalg import toeplitz
from scipy.signal import lfilter

from mbsnet.eval import composite_metrics, frame_measures
from mbsnet.eval.composite import composite_scores, levinson, trimmed_mean

# --- a plain per-frame implementation of the math (Loizou's comp_wss / comp_llr / comp_snr) ---

# fmt: off
CENTRES = [50.0, 120.0, 190.0, 260.0, 330.0, 400.0, 470.0, 540.0, 617.372, 703.378, 798.717,
           904.128, 1020.38, 1148.30, 1288.72, 1442.54, 1610.70, 1794.16, 1993.93, 2211.08,
           2446.71, 2701.97, 2978.04, 3276.17, 3597.63]
WIDTHS = [70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 77.3724, 86.0056, 95.3398, 105.411, 116.256,
          127.914, 140.423, 153.823, 168.154, 183.457, 199.776, 217.153, 235.631, 255.255,
          276.072, 298.126, 321.465, 346.136]
# fmt: on
LENGTH, HOP, NFFT, ORDER = 480, 120, 1024, 16


def loop_filters() -> np.ndarray:
    filters = np.zeros((25, NFFT // 2))
    for i in range(25):
        f0 = CENTRES[i] / 8000 * (NFFT // 2)
        bw = WIDTHS[i] / 8000 * (NFFT // 2)
        for j in range(NFFT // 2):
            value = math.exp(-11 * ((j - math.floor(f0)) / bw) ** 2 + math.log(70 / WIDTHS[i]))
            filters[i, j] = value if value > math.exp(-30 / (2 * 2.303)) else 0.0
    return filters


def loop_peaks(energy: np.ndarray, slope: np.ndarray) -> np.ndarray:
    peaks = np.empty(24)
    for i in range(24):
        n = i
        if slope[i] > 0:
            while n < 24 and slope[n] > 0:
                n += 1
            peaks[i] = energy[n - 1]
        else:
            while n >= 0 and slope[n] <= 0:
                n -= 1
            peaks[i] = energy[n + 1]
    return peaks


def loop_wss(clean: np.ndarray, enh: np.ndarray, filters: np.ndarray) -> float:
    weights, slopes = [], []
    for frame in (clean, enh):
        power = np.abs(np.fft.fft(frame, NFFT)) ** 2
        bands = np.array([np.sum(filters[i] * power[: NFFT // 2]) for i in range(25)])
        energy = 10 * np.log10(np.maximum(bands, 1e-10 * 32768.0**2))
        slope = energy[1:] - energy[:-1]
        peaks = loop_peaks(energy, slope)
        w_max = 20 / (20 + energy.max() - energy[:24])
        w_loc = 1 / (1 + peaks - energy[:24])
        weights.append(w_max * w_loc)
        slopes.append(slope)
    w = (weights[0] + weights[1]) / 2
    return float(np.sum(w * (slopes[0] - slopes[1]) ** 2) / np.sum(w))


def loop_lpc(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.array([np.dot(frame[: LENGTH - k], frame[k:]) for k in range(ORDER + 1)])
    a = np.zeros(ORDER + 1)
    a[0] = 1.0
    err = r[0]
    for i in range(1, ORDER + 1):
        k = -np.dot(a[:i], r[i:0:-1]) / err if err > 0 else 0.0
        a[1 : i + 1] = a[1 : i + 1] + k * a[i - 1 :: -1]
        err *= 1 - k * k
    return r, a


def loop_llr(clean: np.ndarray, enh: np.ndarray) -> float:
    r_c, a_c = loop_lpc(clean)
    _, a_p = loop_lpc(enh)
    if r_c[0] == 0:
        return math.nan
    matrix = toeplitz(r_c)
    return math.log((a_p @ matrix @ a_p) / (a_c @ matrix @ a_c))


def loop_frame_measures(clean: np.ndarray, enh: np.ndarray) -> tuple[np.ndarray, ...]:
    x, y = clean * 32768.0, enh * 32768.0
    window = 0.5 * (1 - np.cos(2 * np.pi * np.arange(1, LENGTH + 1) / (LENGTH + 1)))
    filters = loop_filters()
    eps = np.finfo(float).eps
    wss, llr, ssnr = [], [], []
    for f in range(int(len(x) / HOP - LENGTH / HOP)):
        cf = x[f * HOP : f * HOP + LENGTH] * window
        pf = y[f * HOP : f * HOP + LENGTH] * window
        wss.append(loop_wss(cf, pf, filters))
        llr.append(loop_llr(cf, pf))
        snr = 10 * math.log10(np.sum(cf**2) / (np.sum((cf - pf) ** 2) + eps) + eps)
        ssnr.append(min(max(snr, -10.0), 35.0))
    return np.array(wss), np.array(llr), np.array(ssnr)


def _random_pair(kind: str, n: int = 9000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng({"white": 1, "coloured": 2, "silences": 3}[kind])
    clean = 0.1 * rng.standard_normal(n)
    if kind != "white":
        clean = lfilter([1.0], [1.0, -1.6, 0.8], clean) * 0.1  # resonant, speech-like spectrum
    enhanced = clean + 0.03 * rng.standard_normal(n)
    if kind == "silences":
        clean[1000:2500] = 0.0  # all-zero clean frames: LLR undefined
        enhanced[5000:6500] = 0.0  # all-zero enhanced frames: LPC [1, 0, ...]
    return clean, enhanced


@pytest.mark.parametrize("kind", ["white", "coloured", "silences"])
def test_vectorized_frames_equal_loop(kind):
    clean, enhanced = _random_pair(kind)
    got = frame_measures(clean, enhanced)
    wss, llr, ssnr = loop_frame_measures(clean, enhanced)
    assert got.wss.shape == wss.shape == (int(len(clean) / HOP - 4),)
    np.testing.assert_allclose(got.wss, wss, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.llr, llr, rtol=0, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(got.ssnr, ssnr, rtol=0, atol=1e-9)
    if kind == "silences":
        assert np.isnan(got.llr).sum() == 8  # frames wholly inside the clean zero run
        assert np.isfinite(got.wss).all()


def test_levinson_zero_row_and_known_ar():
    rows = np.zeros((2, 3))
    rows[1] = [1.0, 0.5, 0.25]  # AR(1) with coefficient 0.5
    poly = levinson(rows)
    np.testing.assert_allclose(poly, [[1, 0, 0], [1, -0.5, 0]], atol=1e-15)


def test_trimmed_mean_keeps_reference_count_and_skips_undefined():
    values = np.arange(20.0)
    assert trimmed_mean(values) == np.mean(values[:19])
    values[[3, 7]] = np.nan  # undefined frames sort last: one is trimmed, one skipped
    assert trimmed_mean(values) == np.mean(np.delete(np.arange(20.0), [3, 7]))


def test_composite_scores_clip_and_refuse_nan():
    scores = composite_scores(pesq_wb=4.5, llr=0.0, wss=0.0, ssnr=35.0)
    assert scores == {"csig": 5.0, "cbak": 5.0, "covl": 5.0}
    with pytest.raises(ValueError, match="llr"):
        composite_scores(pesq_wb=2.0, llr=math.nan, wss=30.0, ssnr=0.0)


# --- published references ---


def _read(path: Path) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(path)
    return audio, rate


def test_vbd_published_python_port_values(shared_data):
    """CSIG/CBAK/COVL/SSNR of the 25 vbd_test25 noisy files, given the published PESQ."""
    table = shared_data / "reference" / "vbd_published_noisy_metrics_for_our_files.csv"
    rows = {r["utt"]: r for r in csv.DictReader(table.open())}
    names = sorted(p.stem for p in (shared_data / "vbd_test25" / "noisy").glob("*.wav"))
    assert len(names) == 25
    for name in names:
        clean, _ = _read(shared_data / "vbd_test25" / "clean" / f"{name}.wav")
        noisy, _ = _read(shared_data / "vbd_test25" / "noisy" / f"{name}.wav")
        row = rows[name]
        got = composite_metrics(clean, noisy, pesq_wb=float(row["py_PESQ_wb"]))
        for key in ("csig", "cbak", "covl", "ssnr"):
            assert got[key] == pytest.approx(float(row[f"py_{key.upper()}"]), abs=1e-3), (name, key)


def test_pysepm_matlab_example(shared_data):
    """Loizou's MATLAB values, after clipping to [1, 5] (documented gaps 0.012 / 0.003 / 0.008)."""
    table = shared_data / "reference" / "pysepm_matlab_reference_example1_16k.csv"
    folder = shared_data / "pysepm_example"
    clean, _ = _read(folder / "clean" / "1_16000_Hz.wav")
    from pesq import pesq

    for row in csv.DictReader(table.open()):
        which = row["pair"].split(" vs ")[1].split(" ")[0]
        degraded, _ = _read(folder / which / "1_16000_Hz.wav")
        pesq_wb = pesq(16000, clean, degraded, "wb")
        assert pesq_wb == pytest.approx(float(row["PESQ_wb_MOSLQO"]), abs=1e-3)
        got = composite_metrics(clean, degraded, pesq_wb)
        for key, tol in (("csig", 0.012), ("cbak", 0.003), ("covl", 0.008)):
            want = min(max(float(row[key.capitalize()]), 1.0), 5.0)
            assert got[key] == pytest.approx(want, abs=tol), (which, key)


def _dns_pair(shared_data: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    clean, _ = _read(shared_data / "dns_test3" / "clean" / f"{name}.wav")
    noisy, _ = _read(shared_data / "dns_test3" / "noisy" / f"{name}.wav")
    return clean, noisy


def _reference_trim(values: np.ndarray) -> float:
    """The port's trimmed mean: NaN sorts last and, past the 5 % cut, poisons the mean."""
    return float(np.mean(np.sort(values)[: round(values.size * 0.95)]))


def test_digital_silence_defect_fixed(shared_data):
    clean, noisy = _dns_pair(shared_data, "fileid_170")
    frames = frame_measures(clean, noisy)
    undefined = np.isnan(frames.llr).sum()
    assert undefined > frames.llr.size - round(frames.llr.size * 0.95)  # 68 > 66 trimmed
    # The defect: NaN LLR -> CSIG = max(1, min(5, nan)) -> 1.0 in the reference port.
    assert math.isnan(_reference_trim(frames.llr))
    got = composite_metrics(clean, noisy, pesq_wb=1.195)
    assert all(math.isfinite(v) for v in got.values())
    assert 1.5 < got["csig"] < 4.0 and got["csig"] != 1.0
    assert 1.2 < got["covl"] < 4.0 and got["covl"] != 1.0
    assert got["llr"] == pytest.approx(np.nanmean(frames.llr))  # every defined frame


@pytest.mark.parametrize("name", ["fileid_44", "fileid_58"])
def test_digital_silence_fix_leaves_other_files_alone(shared_data, name):
    clean, noisy = _dns_pair(shared_data, name)
    frames = frame_measures(clean, noisy)
    assert np.isnan(frames.llr).any()  # they have silent frames too, all within the 5 % trim
    assert trimmed_mean(frames.llr) == _reference_trim(frames.llr)
    assert trimmed_mean(frames.wss) == _reference_trim(frames.wss)


def test_float_scale_floor_reproduces_the_documented_csig_shift(shared_data, monkeypatch):
    """p232_023: CSIG 2.612 as published (int16 convention); with the band-energy floor where
    the reference port puts it for float [-1, 1] input it becomes 2.743 (the figure quoted in
    composite.py's docstring and the README)."""
    import mbsnet.eval.composite as composite
    from mbsnet.eval.metrics import pesq_wb

    folder = shared_data / "vbd_test25"
    clean, _ = sf.read(folder / "clean" / "p232_023.wav", dtype="float64")
    noisy, _ = sf.read(folder / "noisy" / "p232_023.wav", dtype="float64")
    pesq = pesq_wb(clean, noisy)
    assert composite_metrics(clean, noisy, pesq)["csig"] == pytest.approx(2.612, abs=5e-4)
    # float input: the port divides by 32768 once more, so its floor sits 32768**2 higher
    monkeypatch.setattr(composite, "_WSS_FLOOR", composite._WSS_FLOOR * composite.INT16_SCALE**2)
    assert composite_metrics(clean, noisy, pesq)["csig"] == pytest.approx(2.743, abs=5e-4)
