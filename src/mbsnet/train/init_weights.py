"""`mbsnet train --init CKPT`: start a run from a checkpoint's weights (fine-tuning).

Only the weights travel: the optimizer, the schedule and the step count start fresh. The
architecture and its config come from the checkpoint, so `model.*` settings that ask for a
different model are an error rather than a silent override.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mbsnet.train.config import ModelSection, TrainConfig, model_config

__all__ = ["InitError", "apply_init"]


class InitError(ValueError):
    """The --init checkpoint cannot start this run (one-line message)."""


def _asked_model(cfg: TrainConfig) -> tuple[str, dict[str, Any]] | None:
    """(arch, config) the user's model.* settings ask for; None when they are the defaults."""
    defaults = ModelSection()
    own = dataclasses.replace(cfg.model, init=defaults.init)
    if own == defaults:
        return None
    return own.arch, dataclasses.asdict(model_config(own))


def apply_init(cfg: TrainConfig) -> tuple[dict[str, Any], str]:
    """Point `cfg.model` at the --init checkpoint's model and return its weights.

    Args:
        cfg: a new run's config with `model.init` set ("default" or a checkpoint path).
    Returns:
        (the checkpoint's state dict, a one-line description for the log).
    Raises:
        InitError: no such checkpoint, unreadable or foreign, or model.* settings that ask for
            another architecture or config than the checkpoint holds.
    """
    from mbsnet.checkpoint import (
        CheckpointError,
        file_sha256,
        load_checkpoint,
        model_from_checkpoint,
    )
    from mbsnet.weights import resolve_checkpoint

    try:
        path = resolve_checkpoint(cfg.model.init)
        ckpt = load_checkpoint(path)
        model = model_from_checkpoint(ckpt)  # also checks that the weights fit the arch
    except (CheckpointError, FileNotFoundError) as error:
        raise InitError(f"--init: {error}") from None
    # The model's own config: fields the checkpoint predates (e.g. `causal`) at their defaults.
    arch, config = ckpt["arch"], dataclasses.asdict(model.config)
    asked = _asked_model(cfg)
    if asked is not None and asked != (arch, config):
        diff = sorted(k for k in config if asked[1].get(k) != config[k]) if asked[0] == arch else []
        what = f"arch {asked[0]!r}" if asked[0] != arch else f"{', '.join(diff)}"
        raise InitError(
            f"--init {path} holds a {arch} model, but the config asks for a different one "
            f"({what}); drop the model settings: --init takes the model from the checkpoint"
        )
    cfg.model = ModelSection(arch=arch, preset="", params=config, init=cfg.model.init)
    note = f"weights from {path} (sha256 {file_sha256(path)[:12]}); fresh optimizer and schedule"
    return model.state_dict(), note
