"""The training loop: build everything, start fresh or resume, then epochs of steps.

Reproducibility: the data order is a pure function of (seed, epoch) (`epoch_batches`), every
item a pure function of (seed, epoch, index), and the RNG states travel in the checkpoint, so
N steps in one go and N/2 + resume + N/2 give the same weights on CPU.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mbsnet import distrib
from mbsnet.train import losses
from mbsnet.train.config import TrainConfig, lr_at
from mbsnet.train.discriminator_step import discriminator_loss
from mbsnet.train.pesq_targets import PesqBatch, PesqPoolError
from mbsnet.train.state import Progress, read_train_state, restore_train_state
from mbsnet.train.trainer import (
    Run,
    TrainingError,
    ValidationInterrupted,
    build_run,
    check_in_sync,
    close_logging,
    loader,
    pick_device,
    prune_epoch_checkpoints,
    save_latest,
    save_to,
    validate,
)

__all__ = ["TrainingError", "train", "validate"]


def _set_lr(run: Run) -> float:
    lr = lr_at(run.progress.step, run.cfg.optim, run.total_steps)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    if run.disc_optimizer is not None:
        d_lr = lr_at(run.progress.step, run.cfg.optim, run.total_steps, run.cfg.discriminator.lr)
        for group in run.disc_optimizer.param_groups:
            group["lr"] = d_lr
    return lr


def _gen_loss(
    run: Run,
    noisy: torch.Tensor,
    clean: torch.Tensor,
    lengths: torch.Tensor,
    module: nn.Module,
    disc: nn.Module | None,
) -> tuple[torch.Tensor, Any]:
    """Forward and loss; `c` scales both the model input and the loss (same level)."""
    cfg = run.cfg
    c = losses.padded_level_scale(noisy, lengths)
    with torch.autocast(run.device.type, torch.bfloat16, enabled=run.autocast):
        enhanced = module(noisy, scale=c)
    weights = losses.LossWeights(cfg.loss.ri, cfg.loss.mag, cfg.loss.time, cfg.loss.metric)
    result = losses.generator_loss(
        clean,
        enhanced,
        c,
        run.model.stft,
        lengths,
        discriminator=disc,
        weights=weights,
        power=cfg.loss.compress_power,
        distance=cfg.loss.distance,
    )
    return enhanced, result


def _submit_pesq(run: Run, clean: torch.Tensor, enhanced: torch.Tensor, lengths: Any) -> Any:
    """Queue the batch's PESQ targets: a pool handle, or the `PesqPoolError` that stopped it."""
    try:
        return run.pool.submit(clean, enhanced.detach(), lengths.tolist())
    except PesqPoolError as error:
        return error


def _pesq_targets(run: Run, handle: Any, size: int) -> PesqBatch:
    """The targets of a submitted batch; a failed pool makes every sample invalid (logged).

    A PESQ worker killed (say by the out-of-memory killer) must not end the run: that step's
    enhanced term is skipped and counted like any step whose PESQ calls all failed, and the
    next submit starts fresh workers.
    """
    try:
        if isinstance(handle, PesqPoolError):
            raise handle
        return run.pool.result(handle)
    except PesqPoolError as error:
        run.logger.warning("step %d: %s", run.progress.step + 1, error)
        reasons: list[str | None] = [str(error)] * size
        return PesqBatch(torch.full((size,), float("nan")), torch.zeros(size, dtype=bool), reasons)


def _disc_micro(run: Run, handle: Any, result: Any, stats: dict[str, Any]) -> None:
    """One discriminator micro-batch on (clean, enhanced.detach()) with masked PESQ targets."""
    batch = _pesq_targets(run, handle, result.clean_mag.shape[0])
    step = discriminator_loss(
        run.disc_ddp, result.clean_mag, result.enhanced_mag.detach(), batch.scores, batch.valid
    )
    (step.loss / run.cfg.train.grad_accum).backward()
    stats["fail"].append(step.pesq_fail_rate)
    stats["clean"].append(step.loss_clean)
    if step.skipped:
        run.progress.disc_steps_skipped += 1
    else:
        stats["loss"].append(step.loss_total)


def _clip(module: nn.Module, max_norm: float) -> float:
    norm = nn.utils.clip_grad_norm_(module.parameters(), max_norm or math.inf)
    return float(norm)


def _update(run: Run, totals: list[float]) -> tuple[float, float | None]:
    """Clip and step both optimizers; a non-finite loss or gradient skips that network's step.

    Returns the generator's and the discriminator's (None without one) gradient norms before
    clipping (all ranks agree: they come from the all-reduced gradients, and a non-finite
    loss on any rank makes them non-finite).
    """
    p, clip = run.progress, run.cfg.train.clip_norm
    norm = _clip(run.model, clip)
    if math.isfinite(norm) and all(math.isfinite(v) for v in totals):
        run.optimizer.step()
        p.nonfinite_consecutive = 0
    else:
        p.nonfinite_total += 1
        p.nonfinite_consecutive += 1
        run.logger.warning("step %d: non-finite loss or gradient; step skipped", p.step + 1)
    run.optimizer.zero_grad(set_to_none=True)
    disc_norm = None
    if run.disc_optimizer is not None:
        disc_norm = _clip(run.disc, clip)
        if math.isfinite(disc_norm):
            run.disc_optimizer.step()
        run.disc_optimizer.zero_grad(set_to_none=True)
    return norm, disc_norm


def train_step(run: Run, micro_batches: list[Any]) -> dict[str, Any]:
    """One optimizer step over `grad_accum` micro-batches; returns the values to log."""
    t, p = run.cfg.train, run.progress
    lr = _set_lr(run)
    totals: list[float] = []
    terms: dict[str, float] = {}
    disc_stats: dict[str, list[float]] = {"fail": [], "clean": [], "loss": []}
    for i, (noisy, clean, lengths) in enumerate(micro_batches):
        noisy, clean = noisy.to(run.device), clean.to(run.device)
        lengths = lengths.to(run.device)
        last = i == len(micro_batches) - 1
        sync = contextlib.nullcontext() if last or run.gen is run.model else run.gen.no_sync()
        with sync:
            enhanced, result = _gen_loss(run, noisy, clean, lengths, run.gen, run.disc)
            handle = None
            if run.disc is not None:  # submitted early: PESQ overlaps the backward pass
                handle = _submit_pesq(run, clean, enhanced, lengths)
            (result.total / t.grad_accum).backward()
        totals.append(float(result.total.detach()))
        for key, value in result.terms.items():
            terms[key] = terms.get(key, 0.0) + value / len(micro_batches)
        if handle is not None:
            d_ddp = run.disc_ddp is not run.disc and not last
            with run.disc_ddp.no_sync() if d_ddp else contextlib.nullcontext():
                _disc_micro(run, handle, result, disc_stats)
    norm, disc_norm = _update(run, totals)
    row = {
        "step": p.step,
        "epoch": p.epoch,
        "lr": lr,
        "loss": float(np.mean(totals)),
        "grad_norm": norm,
        "nonfinite_steps": p.nonfinite_total,
        **terms,
    }
    if run.disc is not None:
        row.update(
            pesq_fail_rate=float(np.mean(disc_stats["fail"])),
            disc_loss_clean=float(np.mean(disc_stats["clean"])),
            disc_grad_norm=disc_norm,
            disc_loss=float(np.mean(disc_stats["loss"])) if disc_stats["loss"] else None,
            disc_steps_skipped=p.disc_steps_skipped,
            pesq_wait_s=run.pool.last_wait_s,
        )
    if p.nonfinite_consecutive >= t.max_consecutive_nonfinite:
        raise TrainingError(
            f"stopped at step {p.step + 1}: {p.nonfinite_consecutive} consecutive steps with a "
            "non-finite loss or gradient (lower optim.lr, or check the data)"
        )
    return row


def _validate(run: Run) -> tuple[float, float]:
    """Validation PESQ and loss; updates best.pt and the early-stopping counters."""
    p, es = run.progress, run.cfg.early_stopping

    def loss_fn(noisy: torch.Tensor, clean: torch.Tensor, lengths: torch.Tensor) -> Any:
        enhanced, result = _gen_loss(run, noisy, clean, lengths, run.model, None)
        return enhanced, float(result.total)

    start = time.monotonic()
    pesq, loss, count = validate(
        run.model, run.valid_set, loss_fn, run.device, run.valid_pool,
        should_stop=lambda: run.stop.signal_name is not None,
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
        f"validation at step {p.step}: PESQ {pesq:.3f} over {count} item(s), loss {loss:.4f}, "
        f"best {p.best_pesq:.3f} (step {p.best_step}){' *' if improved else ''} "
        f"[{seconds:.1f} s]"
    )
    run.files.validation(
        {"step": p.step, "epoch": p.epoch, "valid_pesq": pesq, "valid_loss": loss,
         "pesq_count": count, "best_pesq": p.best_pesq, "time_s": round(seconds, 1)}
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
    Returns:
        The final progress counters.
    """
    run_dir = Path(run_dir)
    distrib.init_from_env()
    try:
        ckpt = None
        if resume:
            ckpt_path = run_dir / "checkpoints" / "latest.pt"
            ckpt = read_train_state(ckpt_path)
            cfg = TrainConfig.from_dict(ckpt["extra"]["train"]["config"])
            overfit = ckpt["extra"]["train"]["progress"].get("overfit", 0)
        elif (run_dir / "checkpoints" / "latest.pt").exists():
            raise TrainingError(
                f"{run_dir} already holds a run: continue it with --resume {run_dir}, "
                "or choose another --run-dir"
            )
        assert cfg is not None
        saved_max_steps = cfg.train.max_steps
        if max_steps is not None:
            cfg.train.max_steps = max_steps
        if distrib.is_main():
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")
        distrib.barrier()
        run = build_run(cfg, run_dir, pick_device(), pool_factory, overfit)
        run.show_progress = progress
        run.stop_at_step = stop_at_step or 0
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


def _train(run: Run, ckpt: dict[str, Any] | None) -> Progress:
    if ckpt is not None:
        path = run.ckpt_dir / "latest.pt"
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


def _report_overfit(run: Run) -> None:
    """PESQ of the overfit pairs after training, beside that of their noisy input."""
    noisy_pesq, _, _ = validate(
        run.model, run.valid_set, lambda noisy, clean, lengths: (noisy, 0.0), run.device,
        run.valid_pool,
    )  # fmt: skip
    run.logger.info(
        "overfit on %d training pair(s): PESQ %.3f after training (noisy input %.3f)",
        run.progress.overfit,
        run.last_pesq,
        noisy_pesq,
    )
