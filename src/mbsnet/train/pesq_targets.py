"""Normalized wideband PESQ targets for the metric discriminator, from a persistent pool.

`PesqPool` starts its worker processes once and reuses them every step (CMGAN created a new
joblib pool per batch). `submit` returns at once, so PESQ runs while the generator does its
backward pass; `result` collects the scores. A sample whose PESQ cannot be computed is
``valid=False`` with a one-line reason and a NaN score (NaN, not a placeholder, so that a
caller ignoring `valid` fails loudly). A worker that dies raises `PesqPoolError` instead of
hanging; the next `submit` starts fresh workers.

Workers are started with "spawn" and run one BLAS/OpenMP thread: the thread variables are set
in the parent's environment only while the workers start (a spawned child takes the parent's
environment at creation and re-imports the main script, numpy included, before any
initializer could run). The worker side never imports torch (`mbsnet.train._pesq_worker`).
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from mbsnet import SAMPLE_RATE
from mbsnet.train._pesq_worker import THREAD_ENV, init_worker, ping, score_pair

PESQ_FLOOR = 1.0
PESQ_SPAN = 3.5
"""Targets are (PESQ - 1) / 3.5: about [0, 1.04] for wideband PESQ's range 1.04 to 4.64."""

_ENV_LOCK = threading.Lock()
_POOL_IDS = itertools.count()


def normalize_pesq(score: float) -> float:
    """Raw wideband PESQ -> discriminator target."""
    return (score - PESQ_FLOOR) / PESQ_SPAN


def denormalize_pesq(value: float) -> float:
    """Discriminator output -> PESQ scale."""
    return value * PESQ_SPAN + PESQ_FLOOR


class PesqPoolError(RuntimeError):
    """The pool cannot deliver a batch's scores (a worker died or the batch timed out)."""


class PesqBatch(NamedTuple):
    """Scores of one batch; unpacks as ``scores, valid, reasons``.

    scores: float32 (B,) normalized PESQ, NaN where not valid.
    valid: bool (B,).
    reasons: one-line reason per failed sample, None for valid ones.
    """

    scores: torch.Tensor
    valid: torch.Tensor
    reasons: list[str | None]


@dataclass
class PesqHandle:
    """A submitted batch; pass it to `PesqPool.result` exactly once."""

    pool_id: int
    generation: int
    size: int
    futures: list[Future] | None = None
    pairs: list[tuple[np.ndarray, np.ndarray]] | None = None  # workers=0: scored in result()
    done: bool = False


@contextmanager
def _single_thread_env() -> Iterator[None]:
    """Set the thread variables in os.environ for the duration (children inherit them)."""
    with _ENV_LOCK:
        saved = {name: os.environ.get(name) for name in THREAD_ENV}
        os.environ.update(THREAD_ENV)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _rows(batch: Any, lengths: Sequence[int] | None, name: str) -> list[np.ndarray]:
    """(B, N) array or tensor, or a list of 1-D arrays -> float32 rows cut to their lengths."""
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().float().cpu().numpy()
    rows = [np.asarray(row, dtype=np.float32).reshape(-1) for row in batch]
    if lengths is None:
        return rows
    if len(lengths) != len(rows):
        raise ValueError(f"{len(lengths)} lengths for {len(rows)} {name} signals")
    cut = []
    for row, length in zip(rows, lengths, strict=True):
        if not 0 < int(length) <= row.size:
            raise ValueError(f"length {int(length)} outside 1..{row.size} for a {name} signal")
        cut.append(row[: int(length)])
    return cut


class PesqPool:
    """Persistent pool scoring (clean, enhanced) batches with normalized wideband PESQ.

    Args:
        workers: worker processes; 0 scores in the calling process (inside `result`).
        sample_rate: rate of the signals (wideband PESQ needs 16 kHz).
        timeout_s: longest `result` waits for one batch before raising `PesqPoolError`.
        start_timeout_s: longest the workers may take to start.
    Attributes:
        last_wait_s: seconds the last `result` call blocked (time spent waiting for PESQ).
        total_wait_s: sum of `last_wait_s` over all calls; `num_results` counts them.
        restarts: how many times the workers were replaced after a failure.
    """

    def __init__(
        self,
        workers: int = 2,
        sample_rate: int = SAMPLE_RATE,
        timeout_s: float = 300.0,
        start_timeout_s: float = 120.0,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers = workers
        self.sample_rate = sample_rate
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.last_wait_s = 0.0
        self.total_wait_s = 0.0
        self.num_results = 0
        self.restarts = 0
        self._id = next(_POOL_IDS)
        self._generation = 0
        self._broken = False
        self._closed = False
        self._executor: ProcessPoolExecutor | None = None
        self._finalizer: weakref.finalize | None = None
        if workers:
            self._start()

    def _start(self) -> None:
        executor = ProcessPoolExecutor(
            self.workers, mp_context=mp.get_context("spawn"), initializer=init_worker
        )
        self._executor = executor
        self._finalizer = weakref.finalize(self, executor.shutdown, False, cancel_futures=True)
        # Workers are spawned on demand, one per submit while none is idle: a round of pings
        # per worker starts them all now, inside the single-thread environment. Rounds repeat
        # until every worker has answered, i.e. run its initializer: before that it would
        # still die of a SIGTERM sent to the whole process group.
        seen: set[int] = set()
        try:
            for _ in range(20):
                with _single_thread_env():
                    pings = [executor.submit(ping, 0.05) for _ in range(self.workers)]
                seen.update(f.result(timeout=self.start_timeout_s) for f in pings)
                if len(seen) >= self.workers:
                    break
        except (BrokenProcessPool, FutureTimeout) as exc:
            self._broken = True
            raise PesqPoolError(
                f"PESQ workers failed to start ({exc!r}); spawned workers re-import the main "
                'script, so it must be a file guarded by if __name__ == "__main__"'
            ) from exc

    def _restart(self) -> None:
        self._shutdown(wait=False)
        self._generation += 1
        self._broken = False
        self.restarts += 1
        self._start()

    def _shutdown(self, wait: bool) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._executor is not None:
            if not wait:
                # A hung worker would outlive shutdown(wait=False): end our own processes
                # (SIGKILL: the workers ignore SIGTERM, see `ignore_stop_signals`).
                for process in list((getattr(self._executor, "_processes", None) or {}).values()):
                    process.kill()
            self._executor.shutdown(wait=wait, cancel_futures=True)
            self._executor = None

    def submit(
        self, clean_batch: Any, enhanced_batch: Any, lengths: Sequence[int] | None = None
    ) -> PesqHandle:
        """Queue a batch without waiting for it.

        Args:
            clean_batch, enhanced_batch: (B, N) numpy arrays or tensors (any device), or lists
                of 1-D arrays, at any common level (PESQ aligns levels itself).
            lengths: valid samples per item (padding after them is dropped); None: all.
        Returns:
            A handle for `result`.
        """
        if self._closed:
            raise PesqPoolError("the PESQ pool is closed")
        if lengths is not None:
            lengths = [int(n) for n in lengths]
        clean = _rows(clean_batch, lengths, "clean")
        enhanced = _rows(enhanced_batch, lengths, "enhanced")
        if len(clean) != len(enhanced) or not clean:
            raise ValueError(f"need equal non-empty batches, got {len(clean)} and {len(enhanced)}")
        if not self.workers:
            pairs = list(zip(clean, enhanced, strict=True))
            return PesqHandle(self._id, self._generation, len(clean), pairs=pairs)
        if self._broken:
            self._restart()
        assert self._executor is not None
        handle = PesqHandle(self._id, self._generation, len(clean))
        try:
            handle.futures = [
                self._executor.submit(score_pair, c, e, self.sample_rate)
                for c, e in zip(clean, enhanced, strict=True)
            ]
        except BrokenProcessPool as exc:
            self._broken = True
            raise PesqPoolError(
                "a PESQ worker process died; the next submit restarts the workers"
            ) from exc
        return handle

    def result(self, handle: PesqHandle) -> PesqBatch:
        """Wait for a submitted batch and return its normalized scores.

        Raises:
            PesqPoolError: a worker died or the batch took over `timeout_s`; the next
                `submit` starts new workers.
            ValueError: a handle from another pool, or one already collected.
        """
        if handle.pool_id != self._id or handle.done:
            raise ValueError("handle is not a pending batch of this pool")
        if handle.generation != self._generation:
            raise PesqPoolError("batch was submitted before the PESQ workers were restarted")
        handle.done = True
        start = time.perf_counter()
        try:
            raw = self._collect(handle)
        finally:
            self.last_wait_s = time.perf_counter() - start
            self.total_wait_s += self.last_wait_s
            self.num_results += 1
        scores = torch.full((handle.size,), float("nan"))
        valid = torch.zeros(handle.size, dtype=torch.bool)
        reasons: list[str | None] = []
        for i, (score, reason) in enumerate(raw):
            if score is not None:
                scores[i] = normalize_pesq(score)
                valid[i] = True
            reasons.append(reason)
        return PesqBatch(scores, valid, reasons)

    def _collect(self, handle: PesqHandle) -> list[tuple[float | None, str | None]]:
        if handle.pairs is not None:
            return [score_pair(c, e, self.sample_rate) for c, e in handle.pairs]
        assert handle.futures is not None
        deadline = time.monotonic() + self.timeout_s
        try:
            return [f.result(timeout=max(0.0, deadline - time.monotonic())) for f in handle.futures]
        except BrokenProcessPool as exc:
            self._broken = True
            raise PesqPoolError(
                "a PESQ worker process died (killed, or out of memory?); this batch has no "
                "scores and the next submit restarts the workers"
            ) from exc
        except FutureTimeout as exc:
            self._broken = True
            raise PesqPoolError(
                f"PESQ batch not done after {self.timeout_s:g} s (a worker hangs?); the next "
                "submit restarts the workers"
            ) from exc

    def score(
        self, clean_batch: Any, enhanced_batch: Any, lengths: Sequence[int] | None = None
    ) -> PesqBatch:
        """`submit` then `result`: blocking convenience for validation and tests."""
        return self.result(self.submit(clean_batch, enhanced_batch, lengths))

    @property
    def mean_wait_s(self) -> float:
        """Average time a `result` call waited."""
        return self.total_wait_s / self.num_results if self.num_results else 0.0

    def close(self) -> None:
        """Stop the workers (pending batches are cancelled). Idempotent."""
        if not self._closed:
            self._closed = True
            self._shutdown(wait=not self._broken)

    def __enter__(self) -> PesqPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
