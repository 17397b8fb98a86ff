"""One optimizer step: generator forward and loss, discriminator on PESQ targets, updates.

The learning rate is set from the step alone (`lr_at`), both networks are clipped with their
pre-clip norms logged, and a non-finite loss or gradient skips the step and is counted.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from mbsnet.models.level import level_scale
from mbsnet.scoring_pool import ScoringPoolError
from mbsnet.train import losses
from mbsnet.train.config import lr_at
from mbsnet.train.discriminator_step import discriminator_loss
from mbsnet.train.pesq_targets import PesqBatch
from mbsnet.train.run import Run, TrainingError

__all__ = ["generator_forward", "train_step"]


def _set_lr(run: Run) -> float:
    lr = lr_at(run.progress.step, run.cfg.optim, run.total_steps)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    if run.disc_optimizer is not None:
        d_lr = lr_at(run.progress.step, run.cfg.optim, run.total_steps, run.cfg.discriminator.lr)
        for group in run.disc_optimizer.param_groups:
            group["lr"] = d_lr
    return lr


def generator_forward(
    run: Run,
    noisy: torch.Tensor,
    clean: torch.Tensor,
    lengths: torch.Tensor,
    module: nn.Module,
    disc: nn.Module | None,
) -> tuple[torch.Tensor, Any]:
    """Forward and loss; `c` scales both the model input and the loss (same level).

    A causal model keeps its own running level (it may not see the rest of the segment), so
    it gets no `c`; the loss is still computed at the segment's level c.
    """
    cfg = run.cfg
    c = level_scale(noisy, lengths)
    with torch.autocast(run.device.type, torch.bfloat16, enabled=run.autocast):
        enhanced = module(noisy) if run.model.causal else module(noisy, scale=c)
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
    """Queue the batch's PESQ targets: a pool handle, or None when the pool failed (logged)."""
    try:
        return run.pool.submit(clean, enhanced.detach(), lengths.tolist())
    except ScoringPoolError as error:
        run.logger.warning("step %d: %s", run.progress.step + 1, error)
        return None


def _pesq_targets(run: Run, handle: Any, size: int) -> PesqBatch:
    """The targets of a submitted batch; a failed pool makes every sample invalid (logged).

    A PESQ worker killed (say by the out-of-memory killer) must not end the run: that step's
    enhanced term is skipped and counted like any step whose PESQ calls all failed, and the
    next submit starts fresh workers.
    """
    if handle is not None:
        try:
            return run.pool.result(handle)
        except ScoringPoolError as error:
            run.logger.warning("step %d: %s", run.progress.step + 1, error)
    reasons: list[str | None] = ["PESQ pool failed"] * size
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
            enhanced, result = generator_forward(
                run, noisy, clean, lengths, run.gen_step, run.disc
            )
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
