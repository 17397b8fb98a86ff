"""Validation: mean PESQ and loss over the fixed validation items, scored as `mbsnet eval` does,
and how much of their clean speech survives the model unchanged."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from mbsnet import distrib
from mbsnet.eval.metrics import pesq_score, snr_db
from mbsnet.scoring_pool import ScoringPool, ScoringPoolError, Task


def _submit_pesq(pool: ScoringPool, pair: tuple[np.ndarray, np.ndarray]) -> Task | None:
    """Queue one pair's PESQ; None when the pool cannot take it (a worker died since the last
    call: the pair is then scored in this process, and the next submit restarts the pool)."""
    try:
        return pool.submit(pesq_score, *pair)
    except ScoringPoolError:
        return None


def _collect_pesq(
    pool: ScoringPool, pair: tuple[np.ndarray, np.ndarray], task: Task | None
) -> list:
    """PESQ of one submitted validation pair ([] when it has none); a dead or hung worker is
    replaced by scoring the pair in this process."""
    try:
        if task is None:
            raise ScoringPoolError("not submitted")
        ((value, _),) = pool.results([task])
    except ScoringPoolError:
        value, _ = pesq_score(*pair)
    return [] if value is None else [value]


class ValidationInterrupted(Exception):
    """A stop signal arrived during validation, which was abandoned (every rank raises it)."""


@torch.no_grad()
def validate(
    model: nn.Module,
    dataset: Any,
    loss_fn: Any,
    device: torch.device,
    pool: Any = None,
    should_stop: Callable[[], bool] | None = None,
    enhance_clean: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[float, float, int, float]:
    """Mean PESQ (wb) and loss over this rank's shard, gathered from all ranks.

    PESQ of each item is submitted to `pool` (a `ScoringPool`; None: scored in this process)
    as soon as the model has enhanced it, so scoring overlaps the next items' inference. It is
    `pesq_score`, the PESQ of `mbsnet eval`: both give the same number for the same audio. Items
    whose PESQ cannot be computed are left out of the mean (the count says how many remain).
    `should_stop` is asked before each item: a long validation must not outlast the grace
    period between a scheduler's SIGTERM and its SIGKILL.

    `enhance_clean(clean, lengths)`, when given, is also run on each item's clean speech and
    scored by SNR against it. A model can gain PESQ on noisy mixtures while it damages speech
    that needs nothing done, for example by cutting clean high frequencies it has learned to
    take for noise; this figure shows that on held-out material, without any test file.

    Returns:
        (mean PESQ over items where it exists, mean loss, number of PESQ scores, mean SNR in dB
        of `enhance_clean`'s output against the clean speech: nan without `enhance_clean`).
    Raises:
        ValidationInterrupted: `should_stop` said yes on any rank.
    """
    pool = pool if pool is not None else ScoringPool(0)
    indices = distrib.shard(range(len(dataset)), distrib.rank(), distrib.world_size())
    # Scores are collected once a few items are in flight, so memory stays bounded by the
    # window, not by the validation set, while PESQ still overlaps inference.
    window = max(2, 2 * pool.workers)
    was_training = model.training
    model.eval()
    pending: collections.deque = collections.deque()
    pesqs, losses, snrs, stopped = [], [], [], False
    for index in indices:
        if should_stop is not None and should_stop():
            stopped = True
            break
        noisy, clean, length = dataset[index]
        noisy, clean = noisy[None].to(device), clean[None].to(device)
        lengths = torch.tensor([length], device=device)
        enhanced, loss = loss_fn(noisy, clean, lengths)
        losses.append(loss)
        pair = tuple(x[:, :length].float().cpu().numpy().reshape(-1) for x in (clean, enhanced))
        pending.append((pair, _submit_pesq(pool, pair)))
        if enhance_clean is not None and np.any(pair[0]):
            through = enhance_clean(clean[:, :length], lengths)
            snrs.append(snr_db(pair[0], through.float().cpu().numpy().reshape(-1)))
        while len(pending) > window:
            pesqs += _collect_pesq(pool, *pending.popleft())
    model.train(was_training)
    if any(distrib.all_gather(stopped)):
        raise ValidationInterrupted
    while pending:
        pesqs += _collect_pesq(pool, *pending.popleft())
    gathered = distrib.all_gather((pesqs, losses, snrs))
    all_pesq = [p for part, _, _ in gathered for p in part]
    all_loss = [v for _, part, _ in gathered for v in part]
    all_snr = [v for _, _, part in gathered for v in part]
    pesq = float(np.mean(all_pesq)) if all_pesq else float("nan")
    snr = float(np.mean(all_snr)) if all_snr else float("nan")
    return pesq, float(np.mean(all_loss)), len(all_pesq), snr

