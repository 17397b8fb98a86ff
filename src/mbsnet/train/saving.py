"""Saving a run: the full training state to latest.pt, best.pt and epoch_XXXX.pt (rank 0)."""

from __future__ import annotations

import time
from pathlib import Path

from mbsnet import distrib
from mbsnet.train.run import Run
from mbsnet.train.state import rng_state, save_train_state


def prune_epoch_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the newest `keep` epoch_XXXX.pt files (0: keep all)."""
    if keep <= 0:
        return
    for old in sorted(folder.glob("epoch_*.pt"))[:-keep]:
        old.unlink(missing_ok=True)


def save_latest(run: Run, *also: Path) -> None:
    """Rank 0: write latest.pt (and the same state to the `also` paths), atomically."""
    save_to(run, run.ckpt_dir / "latest.pt", *also)
    run.last_save = time.monotonic()


def save_to(run: Run, *paths: Path) -> None:
    """Write the full training state to each path (atomic writes; rank 0 writes).

    Every rank calls it: each one's RNG state is gathered, so a resume restores each rank's own.
    """
    rank_rngs = distrib.all_gather(rng_state())
    if not run.main:
        return
    run.ckpt_dir.mkdir(parents=True, exist_ok=True)
    for path in paths:
        save_train_state(
            path, run.model, run.optimizer, run.progress, run.cfg.to_dict(), run.disc,
            run.disc_optimizer, rank_rngs=rank_rngs,
        )  # fmt: skip
