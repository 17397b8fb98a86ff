"""Data order: each rank's batches of an epoch (a pure function of seed and epoch), and their
DataLoader."""

from __future__ import annotations

import math
from typing import Any

import torch

from mbsnet.scoring_pool import ignore_stop_signals
from mbsnet.train.data import collate_fixed


def epoch_batches(
    n: int, batch_size: int, seed: int, epoch: int, rank: int, world: int, accum: int
) -> list[list[tuple[int, int]]]:
    """This rank's batches of `(epoch, index)` keys: a pure function of (seed, epoch).

    The permutation comes from a generator seeded with seed + epoch, padded by wrapping so
    every rank gets the same count, then dealt out rank::world (as DistributedSampler does).
    Only whole batches, and only whole accumulation groups of them, are kept, so a resume can
    skip consumed batches by index without loading their audio.
    """
    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    total = math.ceil(n / world) * world
    order = (order * math.ceil(total / n))[:total][rank::world]
    count = len(order) // batch_size // accum * accum
    if count == 0:
        raise ValueError(
            f"{len(order)} training item(s) per process is fewer than one optimizer step "
            f"(batch_size {batch_size} x grad_accum {accum})"
        )
    return [
        [(epoch, i) for i in order[b * batch_size : (b + 1) * batch_size]] for b in range(count)
    ]


def loader(dataset: Any, batches: list[Any], workers: int) -> torch.utils.data.DataLoader:
    """A DataLoader over explicit batches; its own generator leaves the global RNG alone.

    Its workers ignore SIGINT/SIGTERM like the scoring workers (`mbsnet.scoring_pool`): a
    signal to the whole process group (Ctrl-C, a scheduler's SIGTERM) would otherwise kill
    them, and the run would crash instead of saving at the next step.
    """
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=collate_fixed,
        generator=torch.Generator().manual_seed(0),
        worker_init_fn=_ignore_stop_signals if workers else None,
    )


def _ignore_stop_signals(worker_id: int) -> None:
    ignore_stop_signals()
