"""The one process pool for metrics: eval's per-file scores, training's PESQ (targets, validation).

`ScoringPool` starts its spawned worker processes once and reuses them; `submit` returns at
once, so scoring overlaps whatever the caller does next, and `results` collects. A worker that
dies (killed, out of memory) or a batch that outlasts `timeout_s` raises `ScoringPoolError`
instead of hanging; the next `submit` starts fresh workers. With 0 workers each call runs in
the calling process, when its result is asked for.

Workers ignore SIGINT and SIGTERM (`ignore_stop_signals`): the parent decides when they end.
They run one BLAS/OpenMP thread: the thread variables are set in the parent's environment only
while the workers start (a spawned child takes the parent's environment at creation and
re-imports the main script, numpy included, before any initializer could run). This module
never imports torch, and neither may the functions the workers run: importing torch would cost
each worker about a second and a few hundred MB.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# Thread pools a worker must not start: N workers x M threads on a few cores makes PESQ slower,
# and multi-threaded BLAS made pystoi's small matmuls about 3x slower (see mbsnet.eval.metrics).
THREAD_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}

_ENV_LOCK = threading.Lock()
_POOL_IDS = itertools.count()


def ignore_stop_signals() -> None:
    """Ignore SIGINT and SIGTERM: the parent ends its workers itself.

    A Ctrl-C, or the SIGTERM a scheduler sends to every process of a job, reaches the whole
    process group. A worker killed by it would drop the scores of the step in flight, so the
    run the parent then saves and resumes would no longer match an uninterrupted one.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def init_worker() -> None:
    """Process initializer: stop signals ignored, one BLAS/OpenMP thread (for later imports)."""
    ignore_stop_signals()
    os.environ.update(THREAD_ENV)


def ping(hold_s: float = 0.0) -> int:
    """A task that starts the workers and tells their process id.

    `hold_s` keeps this worker busy for a moment, so that a round of pings reaches every
    worker instead of one fast worker answering them all.
    """
    time.sleep(hold_s)
    return os.getpid()


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


class ScoringPoolError(RuntimeError):
    """The pool cannot deliver a result: a worker died, a batch timed out, or it is closed."""


@dataclass(eq=False)
class Task:
    """One submitted call; `ScoringPool.results` returns its value."""

    pool_id: int
    generation: int
    future: Future | None = None  # None: run in this process by `results`
    call: tuple[Callable[..., Any], tuple[Any, ...]] | None = None


class ScoringPool:
    """Persistent spawned worker processes running top-level, torch-free scoring functions.

    Args:
        workers: worker processes; 0 runs each call in the calling process (in `results`).
        what: what the workers compute, for messages ("PESQ", "metrics").
        timeout_s: longest `results` waits for one batch; None: no limit.
        start_timeout_s: longest the workers may take to start.
    Attributes:
        restarts: how many times the workers were replaced after a failure.
        generation: bumped at each restart; a task of an older one has no result.
    """

    def __init__(
        self,
        workers: int,
        what: str = "scoring",
        timeout_s: float | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers = workers
        self.what = what
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.restarts = 0
        self.generation = 0
        self._id = next(_POOL_IDS)
        self._broken = False
        self._closed = False
        self._executor: ProcessPoolExecutor | None = None
        self._finalizer: weakref.finalize | None = None
        if workers:
            self._start()

    def _start(self) -> None:
        # spawn, never fork: torch's threads are already running in the parent.
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
            raise ScoringPoolError(
                f"{self.what} workers failed to start ({exc!r}); spawned workers re-import the "
                'main script, so it must be a file guarded by if __name__ == "__main__"'
            ) from exc

    def _restart(self) -> None:
        self._shutdown(wait=False)
        self.generation += 1
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

    def submit(self, fn: Callable[..., Any], *args: Any) -> Task:
        """Queue ``fn(*args)`` without waiting for it (`fn` must be a picklable top-level
        function of a torch-free module). After a failure this starts fresh workers first.

        Raises:
            ScoringPoolError: the pool is closed, or a worker died since the last call.
        """
        if self._closed:
            raise ScoringPoolError(f"the {self.what} pool is closed")
        if not self.workers:
            return Task(self._id, self.generation, call=(fn, args))
        if self._broken:
            self._restart()
        assert self._executor is not None
        try:
            return Task(self._id, self.generation, future=self._executor.submit(fn, *args))
        except BrokenProcessPool as exc:
            self._broken = True
            raise ScoringPoolError(
                f"a {self.what} worker process died; the next submit restarts the workers"
            ) from exc

    def finished(self, tasks: Sequence[Task], first: bool = False) -> list[Task]:
        """The tasks whose results are ready, once at least one is (`first`) or all are."""
        if any(task.future is None for task in tasks):
            return list(tasks)  # in-process: `results` computes them at once
        done, _ = wait(
            [task.future for task in tasks if task.future is not None],
            return_when=FIRST_COMPLETED if first else ALL_COMPLETED,
        )
        return [task for task in tasks if task.future in done]

    def results(self, tasks: Sequence[Task]) -> list[Any]:
        """Wait for `tasks` (one batch: `timeout_s` in all) and return their values in order.

        Raises:
            ScoringPoolError: a worker died, the batch took over `timeout_s`, or the workers
                were restarted since these tasks were submitted; the next `submit` starts
                new workers.
            ValueError: a task of another pool.
            Whatever a call raised.
        """
        if any(task.pool_id != self._id for task in tasks):
            raise ValueError(f"a task that is not of this {self.what} pool")
        if any(task.generation != self.generation for task in tasks):
            raise ScoringPoolError(
                f"batch was submitted before the {self.what} workers were restarted"
            )
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        values = []
        for task in tasks:
            if task.call is not None:
                fn, args = task.call
                values.append(fn(*args))
                continue
            assert task.future is not None
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                values.append(task.future.result(timeout=timeout))
            except BrokenProcessPool as exc:
                self._broken = True
                raise ScoringPoolError(
                    f"a {self.what} worker process died (killed, or out of memory?); this batch "
                    "has no scores and the next submit restarts the workers"
                ) from exc
            except FutureTimeout as exc:
                self._broken = True
                raise ScoringPoolError(
                    f"{self.what} batch not done after {self.timeout_s:g} s (a worker hangs?); "
                    "the next submit restarts the workers"
                ) from exc
        return values

    def close(self) -> None:
        """Stop the workers (pending calls are cancelled). Idempotent."""
        if not self._closed:
            self._closed = True
            self._shutdown(wait=not self._broken)

    def __enter__(self) -> ScoringPool:
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        if exc_type is not None:
            self._broken = True  # an error or Ctrl-C: end the workers, do not wait for them
        self.close()
