"""The live objects of one training run (`Run`) and how they are built from a config."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mbsnet import distrib
from mbsnet.allocator import keep_freed_memory
from mbsnet.models import count_parameters, create_model, set_memory_saving
from mbsnet.models.discriminator import create_discriminator
from mbsnet.scoring_pool import ScoringPool
from mbsnet.train.config import ConfigError, TrainConfig, model_config
from mbsnet.train.logs import setup_logging
from mbsnet.train.order import epoch_batches
from mbsnet.train.pesq_targets import BATCH_TIMEOUT_S, PesqPool
from mbsnet.train.plot import RunFiles
from mbsnet.train.signals import StopFlag
from mbsnet.train.state import Progress


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite steps, bad data); the message is one line."""


@dataclass
class Run:
    """The live objects of one training run."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    model: nn.Module
    gen: nn.Module  # `model`, or its DistributedDataParallel wrapper
    gen_step: nn.Module  # what training steps call: `gen`, or its torch.compile'd wrapper
    optimizer: torch.optim.Optimizer
    train_set: Any
    valid_set: Any
    total_steps: int
    logger: Any
    files: RunFiles
    progress: Progress = field(default_factory=Progress)
    disc: nn.Module | None = None
    disc_ddp: nn.Module | None = None
    disc_optimizer: torch.optim.Optimizer | None = None
    pool: Any = None  # discriminator targets
    valid_pool: Any = None  # validation PESQ
    autocast: bool = False
    stop: StopFlag = field(default_factory=StopFlag)
    last_save: float = field(default_factory=time.monotonic)
    epoch_losses: list[float] = field(default_factory=list)
    epoch_start: float = 0.0
    show_progress: bool = True
    interrupted: bool = False
    stop_at_step: int = 0  # > 0: pause (save and return) once this step is done
    last_pesq: float = float("nan")

    @property
    def main(self) -> bool:
        return distrib.is_main()

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def epoch_plan(self, epoch: int) -> list[list[tuple[int, int]]]:
        """This rank's batches of `epoch` (see `epoch_batches`)."""
        t = self.cfg.train
        return epoch_batches(
            len(self.train_set), t.batch_size, t.seed, epoch, distrib.rank(),
            distrib.world_size(), t.grad_accum,
        )  # fmt: skip


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_datasets(cfg: TrainConfig, overfit: int = 0) -> tuple[Any, Any]:
    """Training and validation sets; `overfit` > 0 uses the first N training pairs for both."""
    from mbsnet.train.data import PairedTrainSet, ValidationSet, find_paired_splits

    if cfg.data.mode == "mixing":
        if overfit:
            raise ConfigError("--overfit needs paired data (data.mode = 'paired')")
        return _mixing_datasets(cfg)
    if not cfg.data.data_dir:
        raise ConfigError("data.data_dir is empty: give --data-dir or set it in the config")
    train_scan, valid_scan = find_paired_splits(cfg.data.data_dir, resample=cfg.data.resample)
    train_pairs, valid_pairs = train_scan.pairs, valid_scan.pairs
    if overfit:
        train_pairs = valid_pairs = train_pairs[:overfit]
    train = PairedTrainSet(train_pairs, cfg.data.segment_seconds, cfg.train.seed)
    v = cfg.validation
    valid = ValidationSet(valid_pairs, v.mode, v.cut_seconds, v.cuts_per_file)
    return train, valid


def _mixing_files(cfg: TrainConfig) -> tuple[dict[str, tuple[list, list]], list | None]:
    """{role: (training files, validation files)} for speech and noise, and the RIR files.

    Validation speech and noise come from their own folders, or, where those are not given,
    from a share of the training files held out by name (`holdout_split`).
    """
    from mbsnet.train.files import collect_audio_files, holdout_split

    d = cfg.data
    files = {}
    for role in ("speech", "noise"):
        if not getattr(d, f"{role}_dirs"):
            raise ConfigError(f"data.{role}_dirs is empty (needed by data.mode = 'mixing')")
        train_files = collect_audio_files(getattr(d, f"{role}_dirs"))
        valid_dirs = getattr(d, f"valid_{role}_dirs")
        if valid_dirs:
            files[role] = (train_files, collect_audio_files(valid_dirs))
        else:
            files[role] = holdout_split(train_files, d.valid_holdout, role)
    rirs = collect_audio_files(d.rir_dirs) if d.rir_dirs else None
    return files, rirs


def _mixing_recipe(cfg: TrainConfig) -> dict[str, Any]:
    """The mixing settings that training and validation mixtures share."""
    d = cfg.data
    return dict(
        snr_db=tuple(d.snr_db), rir_probability=d.rir_probability,
        level_dbfs=tuple(d.level_dbfs), eq_probability=d.eq_probability, eq_db=d.eq_db,
        noise_tilt_probability=d.noise_tilt_probability,
        noise_tilt_db_per_octave=tuple(d.noise_tilt_db_per_octave),
        noiseless_probability=d.noiseless_probability,
        noise_lowpass_probability=d.noise_lowpass_probability,
        noise_lowpass_hz=tuple(d.noise_lowpass_hz),
    )  # fmt: skip


def _mixing_datasets(cfg: TrainConfig) -> tuple[Any, Any]:
    """On-the-fly speech + noise (+ RIR) mixtures; validation mixtures fixed by their seed."""
    from mbsnet.train.mixing import MixingTrainSet, MixingValidationSet

    d, v = cfg.data, cfg.validation
    (files, rirs), mix = _mixing_files(cfg), _mixing_recipe(cfg)
    (speech, valid_speech), (noise, valid_noise) = files["speech"], files["noise"]
    train = MixingTrainSet(
        speech, noise, rirs, d.segment_seconds, seed=cfg.train.seed,
        speech_sampling=d.speech_sampling, noise_focus_glob=d.noise_focus_glob,
        noise_focus_probability=d.noise_focus_probability, **mix,
    )  # fmt: skip
    valid = MixingValidationSet(
        valid_speech, valid_noise, rirs, v.cut_seconds, n_items=v.mixing_items,
        seed=v.mixing_seed, **mix,
    )  # fmt: skip
    return train, valid


def training_file_mixtures(cfg: TrainConfig) -> Any:
    """Fixed mixtures made like the validation ones but from the *training* speech and noise.

    Scored beside the validation items, they tell underfitting (equal gains) from memorising
    the training material (larger gains here).
    """
    from mbsnet.train.mixing import MixingValidationSet

    if cfg.data.mode != "mixing":
        raise ConfigError("training-file mixtures need data.mode = 'mixing'")
    v = cfg.validation
    files, rirs = _mixing_files(cfg)
    return MixingValidationSet(
        files["speech"][0], files["noise"][0], rirs, v.cut_seconds, n_items=v.mixing_items,
        seed=v.mixing_seed, **_mixing_recipe(cfg),
    )  # fmt: skip


def _amp(cfg: TrainConfig, device: torch.device, logger: Any) -> bool:
    if cfg.train.amp == "off":
        return False
    if device.type != "cuda":
        logger.warning(
            "train.amp = bf16 on %s: autocast runs (the scan stays float32), but bf16 is meant "
            "for GPUs and is usually slower than float32 on a CPU",
            device,
        )
    return True


def _ddp(module: nn.Module, device: torch.device) -> nn.Module:
    if distrib.world_size() == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def _compiled(module: nn.Module) -> nn.Module:
    """`module` under torch.compile for the fixed-shape training steps.

    Validation and checkpoints keep using the plain module (same parameters): whole files of
    many lengths would each trigger a recompilation, and state dicts keep their own names.
    """
    return torch.compile(module, dynamic=False)


def _adamw(module: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    o = cfg.optim
    return torch.optim.AdamW(
        module.parameters(), lr=lr, betas=tuple(o.betas), weight_decay=o.weight_decay
    )


def build_run(
    cfg: TrainConfig,
    run_dir: Path,
    device: torch.device,
    pool_factory: Any = None,
    overfit: int = 0,
    init: tuple[dict[str, Any], str] | None = None,
) -> Run:
    """Data, model, discriminator, optimizers and log files for `cfg`.

    The model starts from fresh weights, or from `init` ((state dict, log line), from
    `mbsnet.train.init_weights.apply_init`).
    """
    logger = setup_logging(run_dir)
    if cfg.train.keep_freed_memory and keep_freed_memory():
        logger.info("allocator: freed memory kept for reuse (glibc mallopt; mbsnet.allocator)")
    train_set, valid_set = build_datasets(cfg, overfit)
    _seed_everything(cfg.train.seed)
    model = create_model(cfg.model.arch, model_config(cfg.model))
    if init is not None:
        model.load_state_dict(init[0])
        logger.info("initialised from %s", init[1])
    model = model.to(device)
    t = cfg.train
    set_memory_saving(model, t.activation_checkpointing, t.recompute_mamba)
    gen = _ddp(model, device)
    run = Run(
        cfg=cfg, run_dir=run_dir, device=device, model=model, gen=gen,
        gen_step=_compiled(gen) if t.compile else gen,
        optimizer=_adamw(model, cfg, cfg.optim.lr), train_set=train_set, valid_set=valid_set,
        total_steps=0, logger=logger, files=RunFiles(run_dir, distrib.is_main()),
    )  # fmt: skip
    per_epoch = len(run.epoch_plan(0)) // t.grad_accum
    run.total_steps = t.max_steps or per_epoch * t.epochs
    run.autocast = _amp(cfg, device, logger)
    run.progress.overfit = overfit
    run.progress.world_size = distrib.world_size()
    if cfg.discriminator.enabled:
        run.disc = create_discriminator({"ndf": cfg.discriminator.ndf}).to(device)
        run.disc_ddp = _ddp(run.disc, device)
        run.disc_optimizer = _adamw(run.disc, cfg, cfg.discriminator.lr)
        make_pool = pool_factory or PesqPool
        run.pool = make_pool(cfg.discriminator.pesq_workers)
    run.valid_pool = ScoringPool(cfg.validation.pesq_workers, "PESQ", BATCH_TIMEOUT_S)
    _log_start(run, per_epoch)
    return run


def _log_start(run: Run, per_epoch: int) -> None:
    t, log = run.cfg.train, run.logger
    log.info("%s", run.train_set.describe())
    log.info("%s", run.valid_set.describe())
    log.info("generator %s: %s parameters", run.cfg.model.arch, f"{count_parameters(run.model):,}")
    if run.disc is not None:
        log.info("discriminator: %s parameters", f"{count_parameters(run.disc):,}")
    world = distrib.world_size()
    effective = t.batch_size * t.grad_accum * world
    log.info(
        f"effective batch size {effective} (batch {t.batch_size} x grad_accum {t.grad_accum} "
        f"x {world} process(es)); {per_epoch} steps per epoch, {run.total_steps} in total"
    )
    if effective < 4 and run.main:
        log.warning(
            f"effective batch size {effective} is below 4: gradients will be very noisy; "
            "raise train.batch_size or train.grad_accum"
        )


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def check_in_sync(run: Run) -> None:
    """Under DDP, confirm every rank ended with the same weights (a cheap checksum)."""
    if distrib.world_size() == 1:
        return
    checksum = float(sum(p.detach().double().sum() for p in run.model.parameters()))
    sums = distrib.all_gather(checksum)
    if len(set(sums)) == 1:
        run.logger.info("parameters identical on all %d processes", len(sums))
    else:
        run.logger.warning("parameter checksums differ between processes: %s", sums)
