"""The full training state as plain data, saved inside an mbsnet checkpoint.

The model weights stay under ``state_dict`` (so `model_from_checkpoint` loads a training
checkpoint like any other); everything else lives under ``extra["train"]``: optimizers, RNG
states, progress counters and the config. Only tensors, dicts, lists and primitives are
stored, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mbsnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

STATE_KIND = "mbsnet-train-state"
STATE_VERSION = 1


@dataclass
class Progress:
    """Counters that say where training is; `batch` counts micro-batches of `epoch` consumed."""

    epoch: int = 0
    step: int = 0
    batch: int = 0
    best_pesq: float = float("-inf")  # best.pt holds the model of this score
    best_step: int = -1
    patience_pesq: float = float("-inf")  # early stopping: last score that beat min_delta
    bad_validations: int = 0
    last_validation_step: int = -1
    nonfinite_total: int = 0
    nonfinite_consecutive: int = 0
    disc_steps_skipped: int = 0
    stopped_early: bool = False
    overfit: int = 0  # > 0: train and validate on the first `overfit` training pairs only
    world_size: int = 1  # processes that wrote this state (`batch` counts per process)
    noisy_pesq: float = float("nan")  # validation PESQ of the unprocessed noisy input


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as weights_only-loadable data."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `rng_state` (the CUDA part only when CUDA is available)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _own_rng(train: dict[str, Any]) -> dict[str, Any]:
    """This rank's saved RNG state; rank 0's for states saved by another process count."""
    from mbsnet import distrib

    per_rank = train.get("rng_per_rank") or [train["rng"]]
    rank = distrib.rank()
    return per_rank[rank] if len(per_rank) == distrib.world_size() else per_rank[0]


def save_train_state(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: Progress,
    config: dict[str, Any],
    disc: nn.Module | None = None,
    disc_optimizer: torch.optim.Optimizer | None = None,
    scaler: Any = None,
    rank_rngs: list[dict[str, Any]] | None = None,
) -> None:
    """Write everything needed to continue training at the next batch, atomically.

    `rank_rngs`: every process's `rng_state()` in rank order (under DDP each rank draws its
    own random numbers, CUDA's included); None: this process's only.
    """
    rank_rngs = rank_rngs or [rng_state()]
    train = {
        "kind": STATE_KIND,
        "version": STATE_VERSION,
        "config": config,
        "progress": dataclasses.asdict(progress),
        "optimizer": optimizer.state_dict(),
        "disc_config": dataclasses.asdict(disc.config) if disc is not None else None,
        "disc": disc.state_dict() if disc is not None else None,
        "disc_optimizer": disc_optimizer.state_dict() if disc_optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rank_rngs[0],
        "rng_per_rank": rank_rngs,
    }
    save_checkpoint(path, model, extra={"train": train})


def read_train_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint and return it, after checking that it holds a training state."""
    ckpt = load_checkpoint(path)
    train = (ckpt.get("extra") or {}).get("train")
    if not isinstance(train, dict) or train.get("kind") != STATE_KIND:
        raise CheckpointError(path, "holds model weights only, no training state to resume")
    if train.get("version") != STATE_VERSION:
        raise CheckpointError(path, f"training state version {train.get('version')!r} unknown")
    return ckpt


def restore_train_state(
    ckpt: dict[str, Any],
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    disc: nn.Module | None = None,
    disc_optimizer: torch.optim.Optimizer | None = None,
    scaler: Any = None,
) -> Progress:
    """Load weights, optimizers and RNG states from `read_train_state`'s dict into live objects.

    Raises:
        CheckpointError: the checkpoint was written for another architecture, model config or
            discriminator setting (one line naming the difference).
    """
    train = ckpt["extra"]["train"]
    own_config = dataclasses.asdict(model.config)
    # A field the checkpoint predates takes its default (e.g. `causal`, added later): a run
    # written before it existed is the same model and must still resume.
    fields = dataclasses.fields(model.config)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    saved = {**defaults, **dict(ckpt["config"])}
    if ckpt["arch"] != model.ARCH or saved != own_config:
        diff = sorted(k for k in {*own_config, *saved} if saved.get(k) != own_config.get(k))
        raise CheckpointError(
            path,
            f"written for arch {ckpt['arch']!r} with another model config "
            f"(differs in: {', '.join(diff) or 'fields'}); not this run's model",
        )
    if (train["disc"] is None) != (disc is None):
        raise CheckpointError(path, "discriminator on/off differs from this run's config")
    model.load_state_dict(ckpt["state_dict"])
    optimizer.load_state_dict(train["optimizer"])
    if disc is not None and disc_optimizer is not None:
        if train["disc_config"] != dataclasses.asdict(disc.config):
            raise CheckpointError(path, "discriminator config differs from this run's config")
        disc.load_state_dict(train["disc"])
        disc_optimizer.load_state_dict(train["disc_optimizer"])
    if scaler is not None and train["scaler"] is not None:
        scaler.load_state_dict(train["scaler"])
    set_rng_state(_own_rng(train))
    return Progress(**train["progress"])
