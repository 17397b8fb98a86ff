"""Parity of an exported graph with PyTorch on real audio, at lengths that catch baked shapes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mbsnet import SAMPLE_RATE
from mbsnet.audio import read_audio, resample
from mbsnet.enhance.backend import Backend
from mbsnet.eval.metrics import snr_db

PESQ_WARN = 0.02
"""A float16 graph whose PESQ on the example moves more than this is warned about."""
OFF_HOP_SAMPLES = 12345
LONG_SECONDS = 12.0


@dataclass(frozen=True)
class ParityCase:
    """One input of the check: a label and a (B, N) float32 batch."""

    label: str
    wave: np.ndarray


@dataclass(frozen=True)
class ParityResult:
    label: str
    shape: tuple[int, int]
    snr_db: float


def load_example(path: Path) -> np.ndarray:
    """The first channel of an audio file at 16 kHz, (N,) float32 (AudioError if unreadable)."""
    x, info = read_audio(path)
    return resample(x, info.samplerate, SAMPLE_RATE)[0]


def _take(signal: np.ndarray, start: int, n: int) -> np.ndarray:
    """n samples from `start`, the signal repeated as needed (real audio at any length)."""
    reps = math.ceil((start + n) / signal.size)
    return np.tile(signal, reps)[start : start + n]


def parity_cases(example: np.ndarray, hop: int) -> list[ParityCase]:
    """Inputs for the check: under 1 s, not a multiple of the hop, the whole example, over
    10 s, and a batch of 2 with different content and level.

    Shape: example (N,) -> cases of (1, n) or (2, n) float32.
    """
    off_hop = OFF_HOP_SAMPLES + (OFF_HOP_SAMPLES % hop == 0)
    half, n = SAMPLE_RATE // 2, example.size
    long = round(LONG_SECONDS * SAMPLE_RATE)
    seconds = 3 * SAMPLE_RATE
    pair = np.stack([_take(example, 0, seconds), 0.3 * _take(example, n // 2, seconds)])
    cases = [
        ParityCase(f"{half / SAMPLE_RATE:g} s", _take(example, n // 4, half)[None]),
        ParityCase(f"{off_hop} samples (not whole hops)", _take(example, 0, off_hop)[None]),
        ParityCase(f"whole example, {n / SAMPLE_RATE:.2f} s", example[None]),
        ParityCase(f"{LONG_SECONDS:g} s (example repeated)", _take(example, 0, long)[None]),
        ParityCase("batch of 2, different content and level", pair),
    ]
    return [ParityCase(c.label, np.ascontiguousarray(c.wave, np.float32)) for c in cases]


def compare(reference: Backend, candidate: Backend, cases: list[ParityCase]) -> list[ParityResult]:
    """SNR of `candidate`'s output against `reference`'s for every case (whole batches)."""
    results = []
    for case in cases:
        want = reference(case.wave, case.wave)
        got = candidate(case.wave, case.wave)
        snr = snr_db(want, got) if np.isfinite(got).all() else -math.inf
        results.append(ParityResult(case.label, case.wave.shape, snr))
    return results


def pesq_change(reference: Backend, candidate: Backend, example: np.ndarray,
                clean: np.ndarray | None) -> tuple[float, float]:
    """(PESQ of `reference`'s output, PESQ of `candidate`'s) on the whole example.

    Both are scored against `clean` when given, else against the noisy example itself.
    """
    from mbsnet.eval.metrics import pesq_wb

    target = example if clean is None else clean
    wave = example[None]
    return (
        pesq_wb(target, reference(wave, wave)[0]),
        pesq_wb(target, candidate(wave, wave)[0]),
    )
