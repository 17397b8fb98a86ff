"""Evaluation runs: enhance each test file, score it in worker processes, never stop early.

The main process reads each pair, gets the enhanced signal from a `Source` (a model, a folder
of enhanced files, or the noisy input itself for the "noisy" row of paper tables) and hands
(clean, enhanced) to worker processes (`mbsnet.scoring_pool`) as soon as it is ready, so model
inference and metrics overlap; at most ``2 * workers`` submissions are in flight, which bounds
memory on large sets.
Model inference runs on the whole file, as papers do; a file that runs out of memory is
retried in chunks and marked ``chunked``. Any problem with one file (damaged audio, wrong
rate, multichannel, model error) becomes a failed row with a one-line reason.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from mbsnet import SAMPLE_RATE
from mbsnet.audio import AudioError, as_written, read_audio, resample
from mbsnet.enhance.backend import as_backend, is_out_of_memory, is_torch_module
from mbsnet.enhance.chunking import enhance_array
from mbsnet.eval.metrics import EXTENDED_METRICS, METRICS, MetricResult, compute_metrics
from mbsnet.eval.pairs import Pair
from mbsnet.eval.report import FAILED, EvalReport, Row
from mbsnet.scoring_pool import ScoringPool, ScoringPoolError, Task

RETRY_CHUNK_SECONDS = 10.0
"""Chunk length for the out-of-memory retry and for files above ``max_seconds``."""
CHUNK_OVERLAP_SECONDS = 1.0
RESAMPLE_WARNING = (
    "audio not at 16 kHz was resampled with soxr: these scores are NOT comparable to published "
    "tables (resampling changes PESQ by itself)"
)


class EvalError(Exception):
    """A problem with one test file that fails its row; the message is one line."""


@dataclass
class Enhanced:
    """A source's output: (1, N) float32 audio at `samplerate` and how it was made."""

    audio: np.ndarray
    samplerate: int = SAMPLE_RATE
    chunked: bool = False


class Source(Protocol):
    """Where enhanced audio comes from: a model (PyTorch or ONNX), a folder, the noisy input."""

    description: str

    def enhance(self, pair: Pair, noisy: np.ndarray) -> Enhanced:
        """Enhanced audio for `pair`, given its noisy audio as (1, N) float32 at 16 kHz."""
        ...


class NoisySource:
    """The unprocessed input: the "noisy" row of published tables."""

    description = "noisy (unprocessed input)"

    def enhance(self, pair: Pair, noisy: np.ndarray) -> Enhanced:
        return Enhanced(noisy)


class FolderSource:
    """Enhanced files under a folder, by the same relative names as the noisy files."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.description = f"enhanced files in {self.folder}"

    def enhance(self, pair: Pair, noisy: np.ndarray) -> Enhanced:
        path = self.folder / pair.name
        if not path.is_file():
            raise EvalError(f"no enhanced file {pair.name} in {self.folder}")
        audio, info = read_audio(path)
        return Enhanced(audio, samplerate=info.samplerate)


class ModelSource:
    """A model run on the whole file (chunked only above `max_seconds` or after OOM).

    `model` is a `mbsnet.enhance.backend.Backend` (e.g. an onnxruntime session) or a PyTorch
    model, which runs on `device` (default: where it is). Its output is scored as
    `mbsnet enhance` would write it: clipped and quantized to the noisy file's format and
    subtype (`writes_like_enhance`), so eval and enhance agree on the same model.
    """

    writes_like_enhance = True

    def __init__(
        self,
        model: Any,
        device: Any = None,
        max_seconds: float | None = None,
        description: str | None = None,
    ) -> None:
        self.backend = as_backend(model, device)
        self.max_seconds = max_seconds
        self.description = description or self.backend.description

    def _run(self, noisy: np.ndarray, chunk_seconds: float | None) -> np.ndarray:
        return enhance_array(
            self.backend, noisy, chunk_seconds=chunk_seconds,
            overlap_seconds=CHUNK_OVERLAP_SECONDS,
        )

    def enhance(self, pair: Pair, noisy: np.ndarray) -> Enhanced:
        n = noisy.shape[-1]
        chunk = None
        if self.max_seconds is not None and n > self.max_seconds * SAMPLE_RATE:
            chunk = min(RETRY_CHUNK_SECONDS, self.max_seconds)
        out_of_memory = False
        try:
            audio = self._run(noisy, chunk)
        except Exception as exc:
            if chunk is not None or not is_out_of_memory(exc):
                raise
            out_of_memory = True  # retried below, outside this block: the traceback holds tensors
        if out_of_memory:
            gc.collect()
            self.backend.release_memory()
            chunk = max(1.0, min(RETRY_CHUNK_SECONDS, n / SAMPLE_RATE / 2))
            try:
                audio = self._run(noisy, chunk)
            except Exception as exc:
                if is_out_of_memory(exc):
                    raise EvalError(f"out of memory, even in chunks of {chunk:.1f} s") from exc
                raise
        return Enhanced(audio, chunked=chunk is not None and n > round(chunk * SAMPLE_RATE))


def make_source(
    source: Any,
    *,
    device: Any = None,
    max_seconds: float | None = None,
) -> Source:
    """A `Source` from a PyTorch model, a folder of enhanced files, None (noisy), or a Source.

    (A `Backend` such as an ONNX session becomes a source with ``ModelSource(backend)``.)

    Raises:
        ValueError: `device` or `max_seconds` given for a source that is not a model.
    """
    if is_torch_module(source):
        return ModelSource(source, device=device, max_seconds=max_seconds)
    if device is not None or max_seconds is not None:
        raise ValueError("device and max_seconds apply to a model source only")
    if source is None:
        return NoisySource()
    if isinstance(source, str | os.PathLike):
        return FolderSource(source)
    return source


def _mono(audio: np.ndarray, what: str) -> np.ndarray:
    if audio.shape[0] != 1:
        raise EvalError(
            f"{what} has {audio.shape[0]} channels; eval scores mono files, as papers do"
        )
    return audio


def _to_16k(audio: np.ndarray, rate: int, allow: bool, what: str) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return audio
    if not allow:
        raise EvalError(
            f"{what} is at {rate} Hz; metrics are defined at {SAMPLE_RATE} Hz "
            "(--resample converts it, but scores are then not comparable to published tables)"
        )
    return resample(audio, rate, SAMPLE_RATE)


@dataclass
class Prepared:
    """16 kHz mono signals of one pair, ready to score or plot; each (N,) float32."""

    noisy: np.ndarray
    clean: np.ndarray
    enhanced: np.ndarray
    resampled: bool


def prepare_pair(
    pair: Pair, source: Source, allow_resample: bool, row: Row | None = None
) -> Prepared:
    """Read, check and enhance one pair; fills ``row.duration`` / ``row.chunked`` as known.

    Raises:
        AudioError: a damaged file. EvalError: wrong rate, channels or length, missing
        enhanced file. Anything the source raises (e.g. a model error).
    """
    row = row if row is not None else Row(pair.name)
    noisy, noisy_info = read_audio(pair.noisy)
    row.duration = noisy_info.frames / noisy_info.samplerate
    clean, clean_info = read_audio(pair.clean)
    _mono(noisy, "noisy file")
    _mono(clean, "clean file")
    if noisy_info.samplerate != clean_info.samplerate:
        raise EvalError(
            f"noisy is at {noisy_info.samplerate} Hz but clean at {clean_info.samplerate} Hz"
        )
    if noisy_info.frames != clean_info.frames:
        raise EvalError(
            f"length mismatch: noisy has {noisy_info.frames} frames, clean {clean_info.frames}"
        )
    noisy = _to_16k(noisy, noisy_info.samplerate, allow_resample, "the pair")
    clean = _to_16k(clean, clean_info.samplerate, allow_resample, "the pair")
    out = source.enhance(pair, noisy)
    row.chunked = out.chunked
    audio = out.audio
    if getattr(source, "writes_like_enhance", False):
        audio = as_written(audio, noisy_info.subtype, noisy_info.format)
    enhanced = _to_16k(_mono(audio, "enhanced"), out.samplerate, allow_resample, "enhanced")
    if enhanced.shape != noisy.shape:
        raise EvalError(
            f"enhanced has {enhanced.shape[-1]} samples at 16 kHz, noisy {noisy.shape[-1]}"
        )
    if not np.isfinite(enhanced).all():
        raise EvalError("enhanced audio contains NaN or Inf samples")
    resampled = (noisy_info.samplerate, out.samplerate) != (SAMPLE_RATE, SAMPLE_RATE)
    return Prepared(noisy[0], clean[0], enhanced[0].astype(np.float32), resampled)


def score_against(clean: Path, degraded: Path, names: tuple[str, ...]) -> dict[str, float]:
    """Metrics `names` of one file against its clean reference (both mono, 16 kHz if not,
    resampled), as `mbsnet eval` computes them.

    Raises:
        EvalError: unreadable files, other channel counts or lengths, or a metric that cannot
            be computed for this pair (one line naming it).
    """
    signals = []
    for path in (clean, degraded):
        try:
            audio, info = read_audio(path)
        except AudioError as error:
            raise EvalError(str(error)) from None
        signals.append(_to_16k(_mono(audio, str(path)), info.samplerate, True, str(path))[0])
    if signals[0].shape != signals[1].shape:
        raise EvalError(f"{degraded} and its reference {clean} differ in length")
    result = compute_metrics(signals[0], signals[1], SAMPLE_RATE)
    missing = [f"{name}: {result.errors[name]}" for name in names if name not in result.values]
    if missing:
        raise EvalError(f"{degraded}: " + "; ".join(missing))
    return {name: result.values[name] for name in names}


def _describe(exc: BaseException) -> str:
    """One line for a failed row: library errors as is, others with their type."""
    if isinstance(exc, EvalError | AudioError):
        text = str(exc)
    elif is_out_of_memory(exc):
        text = f"out of memory: {exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:500]


_Job = tuple[Row, np.ndarray, np.ndarray]
_Outcome = tuple[Row, MetricResult | str]


class _Scorer:
    """compute_metrics for each file on a `ScoringPool` (workers=0: in this process)."""

    def __init__(self, workers: int, extended: bool) -> None:
        self.workers, self.extended = workers, extended
        self._pool = ScoringPool(workers, "metrics")
        self._pending: dict[Task, _Job] = {}

    def __enter__(self) -> _Scorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.__exit__(*exc_info)

    def _start(self, job: _Job) -> Task:
        # compute_metrics is looked up here, at call time: tests replace it in this module.
        return self._pool.submit(compute_metrics, job[1], job[2], SAMPLE_RATE, self.extended)

    def _outcome(self, row: Row, task: Task) -> _Outcome:
        """The row's metrics, or a one-line reason; ScoringPoolError: its worker died."""
        try:
            (result,) = self._pool.results([task])
        except ScoringPoolError:
            raise
        except Exception as exc:  # a bug in one metric call must not end the run
            return row, f"metrics failed: {_describe(exc)}"
        return row, result

    def submit(self, row: Row, clean: np.ndarray, enhanced: np.ndarray) -> list[_Outcome]:
        """Queue one file; returns the files finished meanwhile (this one, when in-process)."""
        job = (row, clean, enhanced)
        if self.workers == 0:
            return [self._outcome(row, self._start(job))]
        done = []
        while len(self._pending) >= 2 * self.workers:
            done += self._collect(first=True)
        try:
            task = self._start(job)
        except ScoringPoolError:  # a worker died since the last collect: rescue those files
            done += self.drain()
            task = self._start(job)
        self._pending[task] = job
        return done

    def drain(self) -> list[_Outcome]:
        """Wait for every queued file."""
        done = []
        while self._pending:
            done += self._collect(first=False)
        return done

    def _results(self, tasks: list[Task]) -> tuple[list[_Outcome], list[_Job]]:
        """Outcomes of finished tasks, and the jobs lost with a dead worker."""
        done: list[_Outcome] = []
        lost: list[_Job] = []
        for task in tasks:
            job = self._pending.pop(task)
            try:
                done.append(self._outcome(job[0], task))
            except ScoringPoolError:
                lost.append(job)
        return done, lost

    def _collect(self, first: bool) -> list[_Outcome]:
        done, lost = self._results(self._pool.finished(list(self._pending), first))
        if lost:
            # A worker died (e.g. killed for memory) and the pool with it, taking every
            # in-flight file along. Score each lost file alone on fresh workers, so that only
            # a file that kills its worker again fails.
            rest = self._pool.finished(list(self._pending))  # at once: all failed with the pool
            more_done, more_lost = self._results(rest)
            done += more_done
            done += [self._score_alone(job) for job in lost + more_lost]
        return done

    def _score_alone(self, job: _Job) -> _Outcome:
        try:
            return self._outcome(job[0], self._start(job))
        except ScoringPoolError:
            return job[0], "a metrics worker process died on this file (twice)"


def _stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def evaluate(
    pairs: Sequence[Pair],
    source: Any = None,
    *,
    workers: int | None = None,
    extended: bool = False,
    resample: bool = False,
    max_seconds: float | None = None,
    device: Any = None,
    progress: bool = False,
    log: Callable[[str], None] | None = _stderr,
) -> EvalReport:
    """Score every pair; a file's problem fails its row, never the run.

    Args:
        pairs: test pairs (e.g. ``find_pairs(...).pairs``, or one torchrun shard of them).
        source: a model (run on the full file in this process), a folder of enhanced files
            with the noisy files' relative names, None to score the noisy input itself, or
            any `Source`.
        workers: metric processes; None means os.cpu_count(), 0 computes in this process.
        extended: add ESTOI and SI-SDR.
        resample: score pairs not at 16 kHz after soxr resampling (warned once: not
            comparable to published tables); without it they are failed rows.
        max_seconds: model source only: chunk files longer than this (10 s chunks at most).
        device: model source only: where the model runs (default: where it is).
        progress: show a tqdm bar on stderr.
        log: receives one-line ``error:`` / ``warning:`` messages; None keeps quiet.

    Returns:
        An `EvalReport` with one row per pair, sorted by file name.
    """
    src = make_source(source, device=device, max_seconds=max_seconds)
    log = log or (lambda message: None)
    report = EvalReport(METRICS + (EXTENDED_METRICS if extended else ()), src.description)
    pairs = sorted(pairs, key=lambda pair: pair.name)
    workers = (os.cpu_count() or 1) if workers is None else workers
    workers = min(workers, len(pairs))
    bar = tqdm(total=len(pairs), disable=not progress, unit="file", file=sys.stderr,
               dynamic_ncols=True)

    def finish(outcomes: list[_Outcome]) -> None:
        for row, result in outcomes:
            if isinstance(result, str):
                row.error = result
            else:
                row.values, row.errors = result.values, result.errors
            if row.status == FAILED:
                log(f"error: {row.file}: {row.reason()}")
            report.rows.append(row)
            bar.update()

    with bar, _Scorer(workers, extended) as scorer:
        for pair in pairs:
            bar.set_postfix_str(pair.name, refresh=False)
            row = Row(pair.name)
            try:
                prepared = prepare_pair(pair, src, resample, row)
            except Exception as exc:  # one bad file (or model error) must not end the run
                finish([(row, _describe(exc))])
                continue
            if prepared.resampled:
                if not report.resampled:
                    report.warnings.append(RESAMPLE_WARNING)
                    log(f"warning: {RESAMPLE_WARNING}")
                report.resampled.append(pair.name)
            finish(scorer.submit(row, prepared.clean, prepared.enhanced))
        finish(scorer.drain())
    report.rows.sort(key=lambda row: row.file)
    return report
