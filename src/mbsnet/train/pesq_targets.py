"""Normalized wideband PESQ targets for the metric discriminator, from a persistent pool.

`PesqPool` scores each (clean, enhanced) batch on a `mbsnet.scoring_pool.ScoringPool`, whose
workers start once and are reused every step (CMGAN created a new joblib pool per batch), with
`mbsnet.eval.metrics.pesq_score`, the PESQ of `mbsnet eval`. `submit` returns at once, so PESQ
runs while the generator does its backward pass; `result` collects the scores. A sample whose
PESQ cannot be computed is ``valid=False`` with a one-line reason and a NaN score (NaN, not a
placeholder, so that a caller ignoring `valid` fails loudly). A worker that dies raises
`ScoringPoolError` instead of hanging; the next `submit` starts fresh workers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from mbsnet import SAMPLE_RATE
from mbsnet.eval.metrics import pesq_score
from mbsnet.scoring_pool import ScoringPool, Task

PESQ_FLOOR = 1.0
PESQ_SPAN = 3.5
"""Targets are (PESQ - 1) / 3.5: about [0, 1.04] for wideband PESQ's range 1.04 to 4.64."""
BATCH_TIMEOUT_S = 300.0
"""Longest wait for one batch of PESQ scores (targets or a validation item) before giving up."""


def normalize_pesq(score: float) -> float:
    """Raw wideband PESQ -> discriminator target."""
    return (score - PESQ_FLOOR) / PESQ_SPAN


def denormalize_pesq(value: float) -> float:
    """Discriminator output -> PESQ scale."""
    return value * PESQ_SPAN + PESQ_FLOOR


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
    tasks: list[Task]
    done: bool = False


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
    """Scores (clean, enhanced) batches with normalized wideband PESQ on a `ScoringPool`.

    Args:
        workers: worker processes; 0 scores in the calling process (inside `result`).
        sample_rate: rate of the signals (wideband PESQ needs 16 kHz).
        timeout_s: longest `result` waits for one batch before raising `ScoringPoolError`.
        start_timeout_s: longest the workers may take to start.
    Attributes:
        pool: the `ScoringPool` (its `restarts` counts replaced workers).
        last_wait_s: seconds the last `result` call blocked (time spent waiting for PESQ).
        total_wait_s: sum of `last_wait_s` over all calls; `num_results` counts them.
    """

    def __init__(
        self,
        workers: int = 2,
        sample_rate: int = SAMPLE_RATE,
        timeout_s: float = BATCH_TIMEOUT_S,
        start_timeout_s: float = 120.0,
    ) -> None:
        self.pool = ScoringPool(workers, "PESQ", timeout_s, start_timeout_s)
        self.workers = workers
        self.sample_rate = sample_rate
        self.last_wait_s = 0.0
        self.total_wait_s = 0.0
        self.num_results = 0

    @property
    def restarts(self) -> int:
        return self.pool.restarts

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
        Raises:
            ScoringPoolError: the pool is closed, or a worker died since the last batch.
        """
        if lengths is not None:
            lengths = [int(n) for n in lengths]
        clean = _rows(clean_batch, lengths, "clean")
        enhanced = _rows(enhanced_batch, lengths, "enhanced")
        if len(clean) != len(enhanced) or not clean:
            raise ValueError(f"need equal non-empty batches, got {len(clean)} and {len(enhanced)}")
        tasks = []
        for c, e in zip(clean, enhanced, strict=True):
            tasks.append(self.pool.submit(pesq_score, c, e, self.sample_rate))
        return PesqHandle(id(self), tasks)

    def result(self, handle: PesqHandle) -> PesqBatch:
        """Wait for a submitted batch and return its normalized scores.

        Raises:
            ScoringPoolError: a worker died or the batch took over `timeout_s`; the next
                `submit` starts new workers.
            ValueError: a handle from another pool, or one already collected.
        """
        if handle.pool_id != id(self) or handle.done:
            raise ValueError("handle is not a pending batch of this pool")
        handle.done = True
        start = time.perf_counter()
        try:
            raw = self.pool.results(handle.tasks)
        finally:
            self.last_wait_s = time.perf_counter() - start
            self.total_wait_s += self.last_wait_s
            self.num_results += 1
        size = len(handle.tasks)
        scores = torch.full((size,), float("nan"))
        valid = torch.zeros(size, dtype=torch.bool)
        reasons: list[str | None] = []
        for i, (score, reason) in enumerate(raw):
            if score is not None:
                scores[i] = normalize_pesq(score)
                valid[i] = True
            reasons.append(reason)
        return PesqBatch(scores, valid, reasons)

    def score(
        self, clean_batch: Any, enhanced_batch: Any, lengths: Sequence[int] | None = None
    ) -> PesqBatch:
        """`submit` then `result`: blocking convenience for tests."""
        return self.result(self.submit(clean_batch, enhanced_batch, lengths))

    @property
    def mean_wait_s(self) -> float:
        """Average time a `result` call waited."""
        return self.total_wait_s / self.num_results if self.num_results else 0.0

    def close(self) -> None:
        """Stop the workers (pending batches are cancelled). Idempotent."""
        self.pool.close()

    def __enter__(self) -> PesqPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
