"""Code run inside PESQ worker processes: numpy and pesq only, never torch.

A spawned worker imports this module (and `mbsnet.eval.metrics`) to unpickle its task, so it
must stay light: importing torch would cost each worker about a second and a few hundred MB.
"""

from __future__ import annotations

import math
import os
import signal
import time

import numpy as np

from mbsnet.errors import exception_line
from mbsnet.eval.metrics import pesq_wb, signal_problems

# Thread pools a worker must not start: N workers x M threads on a few cores makes PESQ slower.
THREAD_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


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


def score_pair(clean: np.ndarray, enhanced: np.ndarray, fs: int) -> tuple[float | None, str | None]:
    """Raw wideband PESQ of one pair as (score, None), or (None, one-line reason); never raises."""
    try:
        clean = np.asarray(clean, dtype=np.float64)
        enhanced = np.asarray(enhanced, dtype=np.float64)
        fatal, enhanced_silent = signal_problems(clean, enhanced)
        problem = fatal or enhanced_silent
        if problem:
            return None, problem
        value = pesq_wb(clean, enhanced, fs)
        if not math.isfinite(value):
            return None, f"PESQ is not finite ({value})"
        return value, None
    except Exception as exc:  # one bad pair must not fail the batch
        return None, exception_line(exc)
