"""Per-file speech-enhancement metrics with error capture.

:func:`compute_metrics` scores one (clean, enhanced) pair: wideband PESQ, the composite
CSIG/CBAK/COVL and segmental SNR (:mod:`mbsnet.eval.composite`), STOI, and optionally ESTOI and
SI-SDR. A metric that cannot be computed is reported in ``errors`` with a one-line reason and
left out of ``values``; it never gets a placeholder value and never raises. Only caller mistakes
raise ``ValueError``: a sample rate other than 16 kHz, non-1-D input, or unequal lengths.

Conditions that make a metric meaningless are detected from the inputs rather than from the
libraries' sentinel outputs: pesq raises on a silent reference or enhanced signal and on
under 0.25 s; pystoi returns 1e-5 when fewer than 30 frames are left after its silent-frame
removal and 0.0 for a silent reference. Everything here is plain top-level code (no torch), so
``compute_metrics`` pickles and runs in a worker process.

In a process pool, start the workers with ``OPENBLAS_NUM_THREADS=1`` (set in the parent before
the pool starts; workers inherit it): measured on a busy 2-core machine, multi-threaded BLAS made
pystoi's small matmuls about 3x slower.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from pesq import pesq as _pesq

from mbsnet import SAMPLE_RATE
from mbsnet.errors import exception_line, one_line
from mbsnet.eval.composite import composite_components, composite_min_samples, composite_scores

METRICS = ("pesq", "csig", "cbak", "covl", "ssnr", "stoi")
EXTENDED_METRICS = ("estoi", "si_sdr")

PESQ_MIN_SECONDS = 0.25  # pesq raises BufferTooShortError below this
# pystoi needs 30 STFT frames (256 samples, hop 128) at 10 kHz: 4097 samples after resampling,
# ~0.41 s at 16 kHz. Its silent-frame removal can still leave fewer; that case is caught from
# its RuntimeWarning below.
_STOI_RATE = 10_000
_STOI_MIN_SAMPLES = 256 + 30 * 128 + 1
SI_SDR_MAX_DB = 300.0  # an exact (scaled) copy has zero residual: cap instead of inf


class MetricUnavailable(Exception):
    """A metric that is undefined for this input; the message is the reason recorded."""


@dataclass
class MetricResult:
    """Valid metric values and, for the metrics that could not be computed, one-line reasons."""

    values: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def _reason(exc: BaseException) -> str:
    return one_line(exc) if isinstance(exc, MetricUnavailable) else exception_line(exc)


def _record(result: MetricResult, name: str, compute: Callable[[], float]) -> float | None:
    """Store compute()'s value under ``name``, or the reason it failed; never raises."""
    try:
        value = float(compute())
        if not math.isfinite(value):
            raise MetricUnavailable(f"{name} is not finite ({value})")
    except Exception as exc:  # a failing metric must not abort an evaluation run
        result.errors[name] = _reason(exc)
        return None
    result.values[name] = value
    return value


def _validate(
    clean: ArrayLike, enhanced: ArrayLike, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    if sample_rate != SAMPLE_RATE:
        raise ValueError(
            f"metrics need {SAMPLE_RATE} Hz audio, got {sample_rate} Hz (resample first)"
        )
    clean = np.asarray(clean, dtype=np.float64)
    enhanced = np.asarray(enhanced, dtype=np.float64)
    if clean.ndim != 1 or enhanced.ndim != 1:
        raise ValueError(f"need 1-D signals, got shapes {clean.shape} and {enhanced.shape}")
    if clean.size != enhanced.size:
        raise ValueError(
            f"clean and enhanced differ in length: {clean.size} and {enhanced.size} samples"
        )
    return clean, enhanced


def signal_problems(clean: np.ndarray, enhanced: np.ndarray) -> tuple[str | None, str | None]:
    """(reason every metric fails, reason the reference-only metrics survive) from the inputs."""
    for name, x in (("clean", clean), ("enhanced", enhanced)):
        # A finite sum is the cheap common case (audio cannot overflow it); check exactly if not.
        if not (np.isfinite(x.sum()) or np.isfinite(x).all()):
            return f"{name} signal contains NaN or inf", None
    if clean.size == 0:
        return "empty signals", None
    if not clean.any():
        return "silent reference (all-zero clean signal)", None
    if not enhanced.any():
        return None, "silent enhanced signal (all zeros)"
    return None, None


def pesq_wb(clean: np.ndarray, enhanced: np.ndarray, fs: int = SAMPLE_RATE) -> float:
    """Wideband PESQ (ITU-T P.862.2, the `pesq` package); MetricUnavailable when too short."""
    if clean.size < PESQ_MIN_SECONDS * fs:
        raise MetricUnavailable(
            f"too short for PESQ ({clean.size / fs:.3f} s < {PESQ_MIN_SECONDS} s)"
        )
    return float(_pesq(fs, clean, enhanced, "wb"))


def stoi(
    clean: np.ndarray, enhanced: np.ndarray, fs: int = SAMPLE_RATE, extended: bool = False
) -> float:
    """STOI (or ESTOI) via pystoi; MetricUnavailable when pystoi would return its 1e-5 filler."""
    # imported here: pystoi loads scipy.signal (about 1 s), which eval's parent process,
    # handing the scoring to worker processes, never needs
    from pystoi import stoi as _stoi

    if math.ceil(clean.size * _STOI_RATE / fs) < _STOI_MIN_SAMPLES:
        need = _STOI_MIN_SAMPLES / _STOI_RATE
        raise MetricUnavailable(f"too short for STOI ({clean.size / fs:.3f} s < {need:.2f} s)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_stoi(clean, enhanced, fs, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise MetricUnavailable("too short for STOI after removing silent frames (< 30 frames)")
    return value


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), both signals made zero-mean first."""
    reference = reference - reference.mean()
    estimate = estimate - estimate.mean()
    ref_energy = float(reference @ reference)
    if ref_energy == 0.0:
        raise MetricUnavailable("silent reference (constant clean signal)")
    target = (float(estimate @ reference) / ref_energy) * reference
    residual = estimate - target
    target_energy = float(target @ target)
    if target_energy == 0.0:
        raise MetricUnavailable("enhanced signal has no component along the reference")
    residual_energy = max(float(residual @ residual), target_energy * 10 ** (-SI_SDR_MAX_DB / 10))
    return 10.0 * math.log10(target_energy / residual_energy)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10 log10(|reference|^2 / |reference - estimate|^2); inf when they are equal."""
    error = float(np.sum((reference.astype(np.float64) - estimate) ** 2))
    power = float(np.sum(reference.astype(np.float64) ** 2))
    return math.inf if error == 0 else 10 * math.log10(power / error)


def compute_metrics(
    clean: ArrayLike, enhanced: ArrayLike, sample_rate: int = SAMPLE_RATE, extended: bool = False
) -> MetricResult:
    """All metrics for one pair of float signals in [-1, 1] at 16 kHz.

    Returns the valid values and, per missing metric, why. CSIG/CBAK/COVL need PESQ; SSNR and
    STOI do not. ``extended`` adds ESTOI and SI-SDR.
    """
    clean, enhanced = _validate(clean, enhanced, sample_rate)
    names = METRICS + (EXTENDED_METRICS if extended else ())
    result = MetricResult()
    fatal, enhanced_silent = signal_problems(clean, enhanced)
    if fatal:
        result.errors = dict.fromkeys(names, fatal)
        return result
    fs = sample_rate
    # Each metric below compares the enhanced signal's content with the reference, which is
    # undefined for all-zero output (pesq fails, pystoi and SI-SDR divide 0 by eps).
    # Segmental SNR stays defined: the error is the whole clean signal.
    _record_pesq(result, clean, enhanced, fs, enhanced_silent)
    if enhanced_silent:
        content_metrics = ("stoi", *names[len(METRICS) :])
        result.errors.update(dict.fromkeys(content_metrics, enhanced_silent))
    else:
        _record(result, "stoi", lambda: stoi(clean, enhanced, fs))
        if extended:
            _record(result, "estoi", lambda: stoi(clean, enhanced, fs, extended=True))
            _record(result, "si_sdr", lambda: si_sdr(clean, enhanced))
    _composite(result, clean, enhanced, fs)
    result.values = {name: result.values[name] for name in names if name in result.values}
    result.errors = {name: result.errors[name] for name in names if name in result.errors}
    return result


def _record_pesq(
    result: MetricResult, clean: np.ndarray, enhanced: np.ndarray, fs: int, problem: str | None
) -> None:
    """PESQ into `result`: the input `problem` that rules it out, or its value or failure."""
    if problem:
        result.errors["pesq"] = problem
    else:
        _record(result, "pesq", lambda: pesq_wb(clean, enhanced, fs))


def pesq_score(
    clean: ArrayLike, enhanced: ArrayLike, sample_rate: int = SAMPLE_RATE
) -> tuple[float | None, str | None]:
    """Wideband PESQ of one pair exactly as `compute_metrics` (so `mbsnet eval`) scores it.

    Training uses it for the discriminator's targets and for validation, so a validation PESQ
    and an eval PESQ of the same audio are the same number.

    Returns:
        (PESQ, None), or (None, the one-line reason compute_metrics records). Never raises:
        what compute_metrics refuses (another rate, unequal lengths) is the reason too, so one
        bad pair cannot fail a batch.
    """
    try:
        clean, enhanced = _validate(clean, enhanced, sample_rate)
    except Exception as exc:  # one bad pair must not fail the batch
        return None, exception_line(exc)
    fatal, enhanced_silent = signal_problems(clean, enhanced)
    result = MetricResult()
    _record_pesq(result, clean, enhanced, sample_rate, fatal or enhanced_silent)
    return result.values.get("pesq"), result.errors.get("pesq")


def _composite(result: MetricResult, clean: np.ndarray, enhanced: np.ndarray, fs: int) -> None:
    """SSNR always; CSIG/CBAK/COVL only with PESQ (they are regressions on it)."""
    parts: dict[str, float] = {}

    def components() -> float:
        min_samples = composite_min_samples(fs)
        if clean.size < min_samples:
            raise MetricUnavailable(
                f"too short for SSNR ({clean.size / fs:.4f} s < {min_samples / fs:.4f} s)"
            )
        parts.update(composite_components(clean, enhanced, fs))
        return parts["ssnr"]

    _record(result, "ssnr", components)
    pesq_value = result.values.get("pesq")
    for name in ("csig", "cbak", "covl"):
        if pesq_value is None:
            result.errors[name] = f"needs PESQ: {result.errors['pesq']}"
        elif not parts:
            result.errors[name] = f"needs the composite components: {result.errors['ssnr']}"
        else:
            _record(result, name, lambda name=name: composite_scores(pesq_value, **parts)[name])
