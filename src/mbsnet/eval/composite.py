"""Composite quality measures of Hu & Loizou (2008): WSS, LLR, segmental SNR and CSIG/CBAK/COVL.

Written from the published method and Loizou's MATLAB conventions (composite.m, comp_wss.m,
comp_llr.m, comp_snr.m), vectorized over frames, and checked against the published per-file
VoiceBank+DEMAND values of the widely used Python port and against Loizou's MATLAB output.

Conventions (each verified against the reference tables, not assumed):

* 16 kHz only (frame_measures and composite_components raise otherwise).
* Frames of 30 ms (480 samples at 16 kHz), hop = length / 4, Hann window
  ``0.5 * (1 - cos(2 pi n / (N + 1)))`` for n = 1..N (MATLAB's ``hanning``). The frame count is
  ``floor(L / hop - N / hop)``, which leaves out the last full frame, as the reference does.
* WSS: 25 critical bands (centres 50 Hz .. 3.6 kHz, the 8 kHz-era table), Klatt weighting with
  Kmax = 20 and Klocmax = 1; band energies floored at 1e-10 before the dB conversion. Walking up a
  rising slope, the "nearest peak" is the band just *before* the first falling slope
  (``energy(n - 1)`` in comp_wss); that quirk is kept because the published values depend on it.
* LLR: LPC order 16 (MATLAB's ``P = 10 if fs < 10000 else 16``; order 10 gives LLRs 0.02-0.13
  below what the published scores imply), autocorrelation method, distortion
  ``log(a_p R_c a_p' / a_c R_c a_c')`` with R_c the clean frame's autocorrelation matrix.
* WSS and LLR average the lowest 95 % of frames (``round(0.95 * n_frames)`` of them, Python's
  ``round`` as in the port); segmental SNR averages every frame, each clamped to [-10, 35] dB.
* CSIG = 3.093 - 1.029 LLR + 0.603 PESQ - 0.009 WSS, CBAK = 1.634 + 0.478 PESQ - 0.007 WSS +
  0.063 segSNR, COVL = 1.594 + 0.805 PESQ - 0.512 LLR - 0.007 WSS, each clipped to [1, 5], with
  PESQ the *wideband* score (as in the published VoiceBank+DEMAND tables).

Sample scale. The reference port is fed int16-scaled samples (float x 32768) and divides by 32768
inside WSS, so its 1e-10 band-energy floor sits at full-scale-1.0 power. Given float [-1, 1] input
the floor lands 90 dB too high and WSS shifts (p232_023: CSIG 2.743 instead of the published
2.612). Callers here pass float audio in [-1, 1]; :func:`frame_measures` scales it by 32768
itself and puts the WSS floor at ``1e-10 * 32768**2`` on that scale, which is the reference's
arithmetic exactly (scaling by a power of two is exact in floating point).

Digital silence (deliberate difference from the reference). A clean frame of exact zeros has an
all-zero autocorrelation, so its LLR is log(0 / 0) = NaN. ``np.sort`` puts NaN last and the 95 %
trim drops only ``n - round(0.95 n)`` frames; when more clean frames than that are silent
(DNS ``fileid_170``: 68 of 1329, 66 trimmed), NaN reaches the mean, and Python's
``max(1, nan)`` returns 1, so the port reports CSIG = COVL = 1.0 (CBAK has no LLR term and is
unaffected). Here such frames are *undefined*, not numbers: they still sort last and count in the
trim, but the mean is taken over the defined frames only. Files where the trim already absorbs
every silent frame (every file the reference scores finitely) keep exactly the reference value;
when silent frames exceed 5 % of the file, no defined frame is trimmed. An all-zero *enhanced*
frame is no reason to skip a frame (deleting speech is a real distortion): its LPC polynomial is
taken as [1, 0, ..., 0] (nothing to predict), giving a finite, large LLR. WSS needs no special
case (the energy floor keeps silent frames finite), and segmental SNR clamps them to -10 dB, as
in the reference.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mbsnet import SAMPLE_RATE

INT16_SCALE = 32768.0
"""The reference port computes on float samples multiplied by this (see module docstring)."""

TRIM_KEEP = 0.95  # fraction of frames (the lowest) averaged for WSS and LLR
SSNR_RANGE = (-10.0, 35.0)

# comp_wss: critical-band centre frequencies and bandwidths (Hz), Klatt's weighting constants.
# fmt: off
_BAND_CENTRES = np.array([
    50.0, 120.0, 190.0, 260.0, 330.0, 400.0, 470.0, 540.0, 617.372, 703.378, 798.717, 904.128,
    1020.38, 1148.30, 1288.72, 1442.54, 1610.70, 1794.16, 1993.93, 2211.08, 2446.71, 2701.97,
    2978.04, 3276.17, 3597.63,
])
_BAND_WIDTHS = np.array([
    70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 77.3724, 86.0056, 95.3398, 105.411, 116.256,
    127.914, 140.423, 153.823, 168.154, 183.457, 199.776, 217.153, 235.631, 255.255, 276.072,
    298.126, 321.465, 346.136,
])
# fmt: on
_K_MAX = 20.0
_K_LOCMAX = 1.0
# The reference floors band energies of frames scaled to full-scale 1.0; ours are int16-scaled.
_WSS_FLOOR = 1e-10 * INT16_SCALE**2
_EPS = float(np.finfo(np.float64).eps)  # comp_snr's eps, applied on the int16 scale
_BLOCK = 32  # frames per FFT block: (32, 2, 1024) float64 = 512 KiB stays in L2 (fastest here)


class FrameMeasures(NamedTuple):
    """Per-frame WSS, LLR (NaN where undefined) and clamped segmental SNR (dB)."""

    wss: np.ndarray
    llr: np.ndarray
    ssnr: np.ndarray


def frame_geometry(fs: int) -> tuple[int, int, int, int]:
    """(frame length, hop, FFT size, LPC order) used at rate ``fs``."""
    length = round(30 * fs / 1000)
    hop = length // 4
    n_fft = 2 ** int(np.ceil(np.log2(2 * length)))
    order = 10 if fs < 10_000 else 16
    return length, hop, n_fft, order


def num_frames(n_samples: int, fs: int = SAMPLE_RATE) -> int:
    """Frames the measures use for a signal of ``n_samples`` (0 when too short)."""
    length, hop, _, _ = frame_geometry(fs)
    return max((n_samples - length) // hop, 0)


def composite_min_samples(fs: int = SAMPLE_RATE) -> int:
    """Shortest signal with one frame (the reference's frame count leaves out the last one)."""
    length, hop, _, _ = frame_geometry(fs)
    return length + hop


@lru_cache(maxsize=4)
def _window(length: int) -> np.ndarray:
    return 0.5 * (1.0 - np.cos(2.0 * np.pi * np.arange(1, length + 1) / (length + 1)))


@lru_cache(maxsize=4)
def band_filters(fs: int, n_fft: int) -> np.ndarray:
    """Gaussian-shaped critical-band weights over FFT bins 0..n_fft/2-1, shape (25, n_fft/2)."""
    half = n_fft // 2
    bins = np.arange(half)
    centre = np.floor(_BAND_CENTRES / (fs / 2) * half)[:, None]
    width = (_BAND_WIDTHS / (fs / 2) * half)[:, None]
    norm = np.log(_BAND_WIDTHS[0]) - np.log(_BAND_WIDTHS)[:, None]
    weights = np.exp(-11.0 * ((bins - centre) / width) ** 2 + norm)
    # Weights below -30 dB (in comp_wss's natural-log units) are cut to zero.
    weights[weights <= np.exp(-30.0 / (2.0 * 2.303))] = 0.0
    return weights


def nearest_peaks(energy: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Energy (dB) of the nearest spectral peak for each of the first n_bands-1 bands, per frame.

    Rising slope: walk up to the first non-rising slope n (or the end) and take energy[n - 1];
    otherwise walk down to the last rising slope n (or -1) and take energy[n + 1] (comp_wss).
    """
    n_slopes = slope.shape[1]
    index = np.arange(n_slopes)
    rising = slope > 0
    stops = np.where(rising, n_slopes, index)
    next_stop = np.minimum.accumulate(stops[:, ::-1], axis=1)[:, ::-1]
    last_rise = np.maximum.accumulate(np.where(rising, index, -1), axis=1)
    peak = np.where(rising, next_stop - 1, last_rise + 1)
    return np.take_along_axis(energy, peak, axis=1)


def _klatt_weights(energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Band-slope differences' weights (Klatt: global max and nearest-peak terms) and slopes."""
    slope = np.diff(energy, axis=1)
    head = energy[:, :-1]
    peak = nearest_peaks(energy, slope)
    w_max = _K_MAX / (_K_MAX + energy.max(axis=1, keepdims=True) - head)
    w_loc = _K_LOCMAX / (_K_LOCMAX + peak - head)
    return w_max * w_loc, slope


def wss_frames(energy_clean: np.ndarray, energy_enh: np.ndarray) -> np.ndarray:
    """Weighted spectral slope distance per frame from critical-band energies in dB (F, 25)."""
    w_c, slope_c = _klatt_weights(energy_clean)
    w_p, slope_p = _klatt_weights(energy_enh)
    weight = 0.5 * (w_c + w_p)
    return np.sum(weight * (slope_c - slope_p) ** 2, axis=1) / np.sum(weight, axis=1)


def levinson(autocorr: np.ndarray) -> np.ndarray:
    """LPC polynomials [1, a1..aP] from autocorrelations [R0..RP], along the last axis.

    Vectorized over all leading axes; the loop runs over the order only. A row whose prediction
    error reaches zero (an all-zero frame) stops adapting: an all-zero frame gets [1, 0, ..., 0].
    """
    size = autocorr.shape[-1]
    lags = np.ascontiguousarray(autocorr.reshape(-1, size).T)  # (P + 1, rows): contiguous rows
    poly = np.zeros_like(lags)
    poly[0] = 1.0
    error = lags[0].copy()
    refl = np.empty_like(error)
    for i in range(1, size):
        acc = np.einsum("jn,jn->n", poly[:i], lags[i:0:-1])
        refl.fill(0.0)
        np.divide(-acc, error, out=refl, where=error > 0)
        poly[1 : i + 1] += refl * poly[i - 1 :: -1]
        error *= 1.0 - refl * refl
    return poly.T.reshape(autocorr.shape)


def _lpc_quadratic_form(poly: np.ndarray, autocorr: np.ndarray) -> np.ndarray:
    """``a R a'`` with R the Toeplitz matrix of ``autocorr``, i.e. sum_k R[k] * (a * a)[k]."""
    size = poly.shape[-1]
    weights = np.empty(poly.shape)
    for k in range(size):
        weights[..., k] = np.einsum("...i,...i->...", poly[..., : size - k], poly[..., k:])
    weights[..., 1:] *= 2.0  # R[k] sits on two diagonals of the symmetric matrix
    return np.einsum("...k,...k->...", weights, autocorr)


def llr_frames(autocorr: np.ndarray, clean_energy: np.ndarray) -> np.ndarray:
    """Log-likelihood ratio per frame from (clean, enhanced) autocorrelations (2, F, P + 1).

    NaN where undefined: an all-zero clean frame (``clean_energy`` exactly 0) has no LPC model.
    """
    poly = levinson(autocorr)
    # Both quadratic forms use the clean frame's autocorrelation matrix.
    numer = _lpc_quadratic_form(poly[1], autocorr[0])
    denom = _lpc_quadratic_form(poly[0], autocorr[0])
    defined = (clean_energy > 0) & (denom > 0) & (numer > 0)
    ratio = np.divide(numer, denom, out=np.full(numer.shape, np.nan), where=defined)
    return np.log(ratio, out=ratio, where=defined)


def ssnr_frames(signal_energy: np.ndarray, noise_energy: np.ndarray) -> np.ndarray:
    """Segmental SNR per frame in dB, clamped to SSNR_RANGE (comp_snr's eps, int16 scale)."""
    snr = 10.0 * np.log10(signal_energy / (noise_energy + _EPS) + _EPS)
    return np.clip(snr, *SSNR_RANGE)


@lru_cache(maxsize=4)
def _projections(fs: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Weights taking a power spectrum (rfft bins) to band energies and to autocorrelation lags.

    Returns (bins the bands span, band weights (that many, 25), lag weights (bins, P + 1)).
    Bands use bins 0..n_fft/2-1 as comp_wss does. The lags are the inverse real DFT of the power
    spectrum; n_fft >= 2 * frame length, so they equal the linear autocorrelation.
    """
    _, _, n_fft, order = frame_geometry(fs)
    bands = band_filters(fs, n_fft).T
    n_used = int(np.flatnonzero(bands.any(axis=1))[-1]) + 1  # the bands stop near 4 kHz
    n_bins = n_fft // 2 + 1
    fold = np.full(n_bins, 2.0)  # bins 1..n_fft/2-1 stand for their mirror images too
    fold[[0, -1]] = 1.0
    lags = np.cos(2.0 * np.pi * np.outer(np.arange(n_bins), np.arange(order + 1)) / n_fft)
    return n_used, np.ascontiguousarray(bands[:n_used]), lags * (fold / n_fft)[:, None]


def _spectral_features(
    clean: np.ndarray, enhanced: np.ndarray, fs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Critical-band energies (2, F, 25) and autocorrelations (2, F, P + 1) of clean, enhanced.

    One zero-padded rfft per frame serves both. Frames go through in blocks of _BLOCK (every
    frame of a block at once: one rfft, two matmuls) so the FFT buffer stays in cache.
    """
    length, hop, n_fft, order = frame_geometry(fs)
    count = num_frames(clean.size, fs)
    window = _window(length) * INT16_SCALE  # the int16 convention; a power of 2, so exact
    n_used, band_weights, lag_weights = _projections(fs)
    views = [sliding_window_view(x, length)[::hop] for x in (clean, enhanced)]
    bands = np.empty((count, 2, band_weights.shape[1]))
    autocorr = np.empty((count, 2, order + 1))
    # Buffers reused across blocks (allocating them per block costs ~10 %).
    block = min(_BLOCK, count)
    buf = np.zeros((block, 2, n_fft))  # the zero padding is never written
    spectra = np.empty((block, 2, n_fft // 2 + 1), dtype=np.complex128)
    power = np.empty((2 * block, n_fft // 2 + 1))
    for first in range(0, count, _BLOCK):
        rows = slice(first, min(first + _BLOCK, count))
        n = rows.stop - first
        for i, view in enumerate(views):
            np.multiply(view[rows], window, out=buf[:n, i, :length])
        spectrum = np.fft.rfft(buf[:n], axis=-1, out=spectra[:n]).reshape(2 * n, -1)
        parts = spectrum.view(np.float64)  # interleaved (re, im)
        np.square(parts, out=parts)
        np.add(parts[:, 0::2], parts[:, 1::2], out=power[: 2 * n])
        bands[rows] = (power[: 2 * n, :n_used] @ band_weights).reshape(n, 2, -1)
        autocorr[rows] = (power[: 2 * n] @ lag_weights).reshape(n, 2, -1)
    return bands.transpose(1, 0, 2), autocorr.transpose(1, 0, 2)


def windowed_energy(x: np.ndarray, fs: int = SAMPLE_RATE) -> np.ndarray:
    """Energy of each Hann-windowed frame of ``x`` (as given), without copying frames.

    A frame is ``length / hop`` consecutive hop-sized blocks, so one matmul of the squared blocks
    with the squared window's quarters gives every (block, quarter) term; frame i sums
    ``(i + b, b)`` over quarters b.
    """
    length, hop, _, _ = frame_geometry(fs)
    parts = length // hop
    count = num_frames(x.size, fs)
    blocks = np.square(x[: (count + parts - 1) * hop]).reshape(-1, hop)
    terms = blocks @ np.square(_window(length)).reshape(parts, hop).T
    return sum(terms[b : b + count, b] for b in range(parts))


def frame_measures(clean: np.ndarray, enhanced: np.ndarray, fs: int = SAMPLE_RATE) -> FrameMeasures:
    """WSS, LLR and segmental SNR per frame, for float audio in [-1, 1] (int16-scaled inside)."""
    clean = np.asarray(clean, dtype=np.float64)
    enhanced = np.asarray(enhanced, dtype=np.float64)
    if clean.ndim != 1 or clean.shape != enhanced.shape:
        raise ValueError(f"need equal-length 1-D signals, got {clean.shape} and {enhanced.shape}")
    if fs != SAMPLE_RATE:
        raise ValueError(f"composite measures need {SAMPLE_RATE} Hz audio, got {fs} Hz")
    if num_frames(clean.size, fs) < 1:
        empty = np.empty(0)
        return FrameMeasures(empty, empty, empty)
    bands, autocorr = _spectral_features(clean, enhanced, fs)
    band_db = 10.0 * np.log10(np.maximum(bands, _WSS_FLOOR))
    # Energies on the int16 scale: x 32768**2, exact.
    signal = windowed_energy(clean, fs) * INT16_SCALE**2
    noise = windowed_energy(clean - enhanced, fs) * INT16_SCALE**2
    return FrameMeasures(
        wss=wss_frames(band_db[0], band_db[1]),
        llr=llr_frames(autocorr, signal),
        ssnr=ssnr_frames(signal, noise),
    )


def trimmed_mean(values: np.ndarray, keep: float = TRIM_KEEP) -> float:
    """Mean of the lowest ``round(keep * n)`` values; NaN (undefined) sort last and are skipped."""
    lowest = np.sort(values)[: round(values.size * keep)]
    lowest = lowest[~np.isnan(lowest)]
    return float(lowest.mean()) if lowest.size else float("nan")


def composite_components(
    clean: np.ndarray, enhanced: np.ndarray, fs: int = SAMPLE_RATE
) -> dict[str, float]:
    """File-level LLR and WSS (95 % trimmed means) and segmental SNR (mean), float input."""
    if num_frames(np.size(clean), fs) < 1:
        raise ValueError(f"signal too short for the composite measures ({np.size(clean)} samples)")
    frames = frame_measures(clean, enhanced, fs)
    return {
        "llr": trimmed_mean(frames.llr),
        "wss": trimmed_mean(frames.wss),
        "ssnr": float(frames.ssnr.mean()),
    }


def composite_scores(pesq_wb: float, llr: float, wss: float, ssnr: float) -> dict[str, float]:
    """CSIG, CBAK, COVL from wideband PESQ and the components, clipped to [1, 5]."""
    parts = {"pesq_wb": pesq_wb, "llr": llr, "wss": wss, "ssnr": ssnr}
    bad = [name for name, value in parts.items() if not np.isfinite(value)]
    if bad:
        # Clipping NaN to [1, 5] is how the reference came to report 1.0; refuse instead.
        raise ValueError(f"composite undefined: non-finite {', '.join(bad)}")
    csig = 3.093 - 1.029 * llr + 0.603 * pesq_wb - 0.009 * wss
    cbak = 1.634 + 0.478 * pesq_wb - 0.007 * wss + 0.063 * ssnr
    covl = 1.594 + 0.805 * pesq_wb - 0.512 * llr - 0.007 * wss
    return {
        name: float(np.clip(v, 1.0, 5.0))
        for name, v in (("csig", csig), ("cbak", cbak), ("covl", covl))
    }


def composite_metrics(
    clean: np.ndarray, enhanced: np.ndarray, pesq_wb: float, fs: int = SAMPLE_RATE
) -> dict[str, float]:
    """CSIG/CBAK/COVL and their components (llr, wss, ssnr) for float audio in [-1, 1].

    ``pesq_wb`` is the wideband PESQ of the same pair, so one PESQ call serves both.
    """
    parts = composite_components(clean, enhanced, fs)
    return {**composite_scores(pesq_wb, **parts), **parts}
