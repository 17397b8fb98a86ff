"""The training loop: build everything, start fresh or resume, then epochs of steps.

Reproducibility: the data order is a pure function of (seed, epoch) (`epoch_batches`), every
item a pure function of (seed, epoch, index), and the RNG states travel in the checkpoint, so
N steps in one go and N/2 + resume + N/2 give the same weights on CPU.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbsnet import distrib
from mbsnet.checkpoint import CheckpointError
from mbsnet.train.config import ConfigError, TrainConfig, resume_overrides
from mbsnet.train.init_weights import apply_init
from mbsnet.train.logs import close_logging
from mbsnet.train.order import loader
from mbsnet.train.run import Run, TrainingError, build_run, check_in_sync, pick_device
from mbsnet.train.saving import prune_epoch_checkpoints, save_latest, save_to
from mbsnet.train.state import Progress, read_train_state, restore_train_state
from mbsnet.train.step import generator_forward, train_step
from mbsnet.train.validation import ValidationInterrupted, validate

__all__ = ["ConfigError", "TrainingError", "train", "train_step", "validate"]


def _validate(run: Run) -> tuple[float, float]:
    """Validation PESQ and loss; updates best.pt and the early-stopping counters."""
    p, es = run.progress, run.cfg.early_stopping

    def loss_fn(noisy: torch.Tensor, clean: torch.Tensor, lengths: torch.Tensor) -> Any:
        enhanced, result = generator_forward(run, noisy, clean, lengths, run.model, None)
        return enhanced, float(result.total)

    start = time.monotonic()
    pesq, loss, count, passthrough = validate(
        run.model, run.valid_set, loss_fn, run.device, run.valid_pool,
        should_stop=lambda: run.stop.signal_name is not None,
        enhance_clean=lambda clean, lengths: loss_fn(clean, clean, lengths)[0],
    )  # fmt: skip
    p.last_validation_step, run.last_pesq = p.step, pesq
    seconds = time.monotonic() - start
    # best.pt follows every gain; min_delta only decides what counts as progress for patience.
    improved = math.isfinite(pesq) and pesq > p.best_pesq
    if improved:
        p.best_pesq, p.best_step = pesq, p.step
        save_to(run, run.ckpt_dir / "best.pt")
    if math.isfinite(pesq) and pesq > p.patience_pesq + es.min_delta:
        p.patience_pesq, p.bad_validations = pesq, 0
    else:
        p.bad_validations += 1
    run.logger.info(
        f"validation at step {p.step}: PESQ {pesq:.3f} ({pesq - p.noisy_pesq:+.3f} over the "
        f"noisy input's {p.noisy_pesq:.3f}) over {count} item(s), loss {loss:.4f}, "
        f"best {p.best_pesq:.3f} (step {p.best_step}){' *' if improved else ''}; "
        f"clean speech through the model: SNR {passthrough:.1f} dB [{seconds:.1f} s]"
    )
    run.files.validation(
        {"step": p.step, "epoch": p.epoch, "valid_pesq": pesq, "valid_loss": loss,
         "pesq_count": count, "best_pesq": p.best_pesq, "noisy_pesq": p.noisy_pesq,
         "clean_passthrough_snr_db": passthrough,
         "time_s": round(seconds, 1)}
    )  # fmt: skip
    if es.patience and p.bad_validations >= es.patience:
        p.stopped_early = True
        run.logger.info(
            "early stopping: no PESQ gain of %g in %d validations", es.min_delta, es.patience
        )
    return pesq, loss


def _after_step(run: Run, row: dict[str, Any]) -> None:
    """Logs, step-based validation and checkpoints once step `row['step']` is done."""
    cfg, p = run.cfg, run.progress
    if p.step % cfg.train.log_every_steps == 0 or p.step == 1:
        run.files.step(row)
        disc = row.get("disc_loss")
        run.logger.info(
            f"step {p.step} epoch {p.epoch} lr {row['lr']:.2e} loss {row['loss']:.4f} "
            f"grad_norm {row['grad_norm']:.3g}" + ("" if disc is None else f" disc_loss {disc:.4f}")
        )
    if cfg.validation.every_steps and p.step % cfg.validation.every_steps == 0:
        _validate(run)
    every, minutes = cfg.checkpoint.every_steps, cfg.checkpoint.every_minutes
    due = minutes and time.monotonic() - run.last_save >= 60 * minutes
    if due or (every and p.step % every == 0):
        save_latest(run)


def _stop_reason(run: Run) -> str:
    """Why the run must pause after this step ("" when it goes on): a signal or stop_at_step."""
    if run.stop.requested():
        return f"stop requested ({run.stop.signal_name or 'signal on another rank'})"
    if run.stop_at_step and run.progress.step >= run.stop_at_step and not _finished(run):
        return f"stopped at step {run.progress.step} as asked (--stop-at-step)"
    return ""


def _finished(run: Run) -> bool:
    p = run.progress
    return p.stopped_early or p.step >= run.total_steps


def run_epoch(run: Run) -> bool:
    """Train the rest of the current epoch; returns False when training must stop."""
    t, p = run.cfg.train, run.progress
    run.train_set.set_epoch(p.epoch)
    batches = run.epoch_plan(p.epoch)
    # Resume: the consumed batches are skipped by index; their audio is never loaded.
    remaining = batches[p.batch :]
    from tqdm import tqdm

    bar = tqdm(
        total=len(batches) // t.grad_accum,
        initial=p.batch // t.grad_accum,
        desc=f"epoch {p.epoch}",
        disable=not (run.main and run.show_progress),
        leave=False,
    )
    group: list[Any] = []
    for micro in loader(run.train_set, remaining, t.num_workers):
        group.append(micro)
        if len(group) < t.grad_accum:
            continue
        row = train_step(run, group)
        group = []
        p.step += 1
        p.batch += t.grad_accum
        row["step"] = p.step
        run.epoch_losses.append(row["loss"])
        bar.update(1)
        _after_step(run, row)
        reason = _stop_reason(run)
        if reason:
            bar.close()
            run.interrupted = True
            save_latest(run)
            run.logger.info(
                f"{reason}: saved {run.ckpt_dir / 'latest.pt'} at step {p.step}; "
                f"continue with --resume {run.run_dir}"
            )
            return False
        if _finished(run):
            break
    bar.close()
    if p.batch >= len(batches):
        _end_epoch(run)
    return not _finished(run)


def _end_epoch(run: Run) -> None:
    """Epoch-end validation (unless step-based), epochs.csv, latest.pt and epoch_XXXX.pt."""
    p, cfg = run.progress, run.cfg
    pesq = loss = float("nan")
    if not cfg.validation.every_steps:
        pesq, loss = _validate(run)
    run.files.epoch(
        {
            "epoch": p.epoch,
            "step": p.step,
            "valid_pesq": pesq,
            "valid_loss": loss,
            "best_pesq": p.best_pesq,
            "train_loss": float(np.mean(run.epoch_losses)) if run.epoch_losses else None,
            "time_s": round(time.monotonic() - run.epoch_start, 1),
        }
    )
    finished = p.epoch
    p.epoch, p.batch = p.epoch + 1, 0
    run.epoch_losses, run.epoch_start = [], time.monotonic()
    save_latest(run, run.ckpt_dir / f"epoch_{finished:04d}.pt")
    if run.main:
        prune_epoch_checkpoints(run.ckpt_dir, cfg.checkpoint.keep_epochs)


def train(
    cfg: TrainConfig | None,
    run_dir: str | Path,
    resume: bool = False,
    max_steps: int | None = None,
    stop_at_step: int | None = None,
    progress: bool = True,
    pool_factory: Any = None,
    overfit: int = 0,
    overrides: list[str] | None = None,
    resume_from: str | None = None,
) -> Progress:
    """Train (or, with `resume`, continue the run in `run_dir` from its latest.pt).

    Args:
        cfg: the configuration; ignored when resuming (the checkpoint's is used).
        run_dir: folder for checkpoints/, train.log, steps.csv and epochs.csv.
        max_steps: overrides train.max_steps, the total and the LR schedule's length (e.g. to
            extend a resumed run; the rest of the schedule is then reshaped, logged).
        stop_at_step: save latest.pt and return once this step is done, without changing the
            schedule, so a later resume continues exactly as if never stopped.
        progress: show a tqdm bar per epoch (rank 0).
        pool_factory: builds the PESQ pool from a worker count (tests pass stubs).
        overfit: > 0: train and validate on the first N training pairs (a sanity check that
            the model can fit them); kept in the checkpoint, so a resume does the same.
        overrides: with `resume`, ``section.key=value`` changes of settings that leave the
            result alone (`config.RESUME_SAFE_KEYS`: data paths, workers, logging, checkpoint
            cadence); anything else is a ConfigError. Each change is logged.
        resume_from: with `resume`, continue from this file of RUN_DIR/checkpoints (e.g. an
            epoch_XXXX.pt when latest.pt is damaged) instead of latest.pt.
    Returns:
        The final progress counters.
    """
    run_dir = Path(run_dir)
    distrib.init_from_env()
    try:
        ckpt, changes = None, []
        if resume:
            ckpt = _resume_state(run_dir / "checkpoints", resume_from)
            cfg = TrainConfig.from_dict(ckpt["extra"]["train"]["config"])
            cfg, changes = resume_overrides(cfg, list(overrides or []))
            overfit = ckpt["extra"]["train"]["progress"].get("overfit", 0)
        elif (run_dir / "checkpoints" / "latest.pt").exists():
            raise TrainingError(
                f"{run_dir} already holds a run: continue it with --resume {run_dir}, "
                "or choose another --run-dir"
            )
        assert cfg is not None
        init = apply_init(cfg) if cfg.model.init and not resume else None
        saved_max_steps = cfg.train.max_steps
        if max_steps is not None:
            cfg.train.max_steps = max_steps
        if distrib.is_main():
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")
        distrib.barrier()
        run = build_run(cfg, run_dir, pick_device(), pool_factory, overfit, init)
        run.show_progress = progress
        run.stop_at_step = stop_at_step or 0
        for change in changes:
            run.logger.info(f"resume override {change}")
        if resume and cfg.train.max_steps != saved_max_steps:
            run.logger.warning(
                f"train.max_steps changed from {saved_max_steps or 'derived'} to "
                f"{cfg.train.max_steps}: the LR schedule is recomputed for {run.total_steps} "
                "steps, so this run no longer matches an uninterrupted one (use --stop-at-step "
                "to pause a run without changing its schedule)"
            )
        try:
            return _train(run, ckpt)
        finally:
            for pool in (run.pool, run.valid_pool):
                if pool is not None:
                    pool.close()
            run.files.close()
            close_logging(run.logger)
    finally:
        distrib.cleanup()


def _resume_state(folder: Path, name: str | None) -> dict[str, Any]:
    """The training state to resume: latest.pt, or `name` in `folder`.

    A damaged latest.pt is a TrainingError that names the newest intact checkpoint of the
    run (epoch_XXXX.pt or best.pt), its step, and how to continue from it.
    """
    if name is not None:
        ckpt = read_train_state(folder / name)
        ckpt["resumed_from"] = name
        return ckpt
    try:
        return read_train_state(folder / "latest.pt")
    except CheckpointError as error:
        candidates = []
        for path in [*folder.glob("epoch_*.pt"), folder / "best.pt"]:
            try:
                step = read_train_state(path)["extra"]["train"]["progress"]["step"]
            except CheckpointError:
                continue
            candidates.append((step, path.name))
        if not candidates:
            raise
        step, newest = max(candidates)
        raise TrainingError(
            f"{error}; the newest intact checkpoint of this run is {newest} (step {step}: "
            f"training after it is lost): continue from it with --resume {folder.parent} "
            f"--resume-from {newest}"
        ) from None


def _train(run: Run, ckpt: dict[str, Any] | None) -> Progress:
    if ckpt is not None:
        path = run.ckpt_dir / ckpt.get("resumed_from", "latest.pt")
        run.progress = restore_train_state(
            ckpt, path, run.model, run.optimizer, run.disc, run.disc_optimizer
        )
        p = run.progress
        run.logger.info("resumed %s: epoch %d, batch %d, step %d", path, p.epoch, p.batch, p.step)
        run.files.truncate_after(p.step)
        _adapt_to_world_size(run)
        if p.stopped_early:
            run.logger.info(
                f"this run stopped early at step {p.step} (no PESQ gain of "
                f"{run.cfg.early_stopping.min_delta:g} in {p.bad_validations} validations); "
                "nothing more to train"
            )
        if run.stop_at_step and run.stop_at_step <= p.step:
            raise TrainingError(
                f"--stop-at-step {run.stop_at_step}: the run in {run.run_dir} is already at "
                f"step {p.step}"
            )
    run.epoch_start = time.monotonic()
    run.stop.install()
    try:
        _run_to_the_end(run, resumed=ckpt is not None)
    except ValidationInterrupted:  # saved as it was before that validation, which a resume redoes
        run.interrupted = True
        save_latest(run)
        run.logger.info(
            f"stop requested ({run.stop.signal_name or 'signal on another rank'}) during "
            f"validation: saved {run.ckpt_dir / 'latest.pt'} at step {run.progress.step}; "
            f"continue with --resume {run.run_dir}"
        )
    finally:
        run.stop.restore()
    return run.progress


def _run_to_the_end(run: Run, resumed: bool) -> None:
    """Epochs until done or paused, then the final validation, checkpoint and reports."""
    p, every = run.progress, run.cfg.validation.every_steps
    if math.isnan(p.noisy_pesq):
        _score_noisy_input(run)
    if resumed and every and p.step and p.step % every == 0 and p.last_validation_step != p.step:
        _validate(run)  # due at the step the run was stopped at, before it could run
    while not _finished(run) and run_epoch(run):
        pass
    if run.interrupted:
        return
    if p.last_validation_step != p.step:
        _validate(run)
    save_latest(run)
    check_in_sync(run)
    run.logger.info("training done at step %d; best PESQ %.3f", p.step, p.best_pesq)
    if p.overfit:
        _report_overfit(run)


def _adapt_to_world_size(run: Run) -> None:
    """A resume with another process count: keep the share of the epoch already trained.

    `batch` counts each process's micro-batches, so it is rescaled to the same number of
    samples (rounded down to whole optimizer steps); the order of the rest of the epoch is
    that of the new process count, so the run goes on but is no longer bitwise-reproducible.
    """
    p, world, accum = run.progress, distrib.world_size(), run.cfg.train.grad_accum
    if p.world_size == world:
        return
    old_batch = p.batch
    p.batch = p.batch * p.world_size // world // accum * accum
    run.logger.warning(
        f"resumed with {world} process(es), saved with {p.world_size}: epoch {p.epoch} goes on "
        f"from micro-batch {p.batch} (was {old_batch}) in the new data order, and the effective "
        "batch size changes; the run no longer matches an uninterrupted one"
    )
    p.world_size = world


def _score_noisy_input(run: Run) -> None:
    """PESQ of the unprocessed noisy input on the validation items, once per run.

    Every later validation is logged beside it, so a score reads as a gain. Not interruptible
    (a signal waits for it): it scores the validation set once, without the model.
    """
    pesq, _, count, _ = validate(
        run.model, run.valid_set, lambda noisy, clean, lengths: (noisy, 0.0), run.device,
        run.valid_pool,
    )  # fmt: skip
    run.progress.noisy_pesq = pesq
    run.logger.info(f"validation items as they come (noisy input): PESQ {pesq:.3f} over {count}")


def _report_overfit(run: Run) -> None:
    """PESQ of the overfit pairs after training, beside that of their noisy input."""
    run.logger.info(
        "overfit on %d training pair(s): PESQ %.3f after training (noisy input %.3f)",
        run.progress.overfit,
        run.last_pesq,
        run.progress.noisy_pesq,
    )
