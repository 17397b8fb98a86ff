"""The metric discriminator's loss for one step, robust to PESQ failures.

CMGAN's step is MSE(D(clean, clean), 1) + MSE(D(clean, enhanced), PESQ target), and when any
PESQ call of the batch failed it dropped the whole step and logged its loss as 0. Here:

* the clean-clean term always trains (its target, 1, needs no PESQ), as in CMGAN;
* the enhanced term trains on the samples whose PESQ is valid (mean over those only);
* with no valid sample the enhanced term is skipped (``skipped=True``): the step still trains
  the clean-clean term, and the logged discriminator loss is *missing* (None), never 0.

Both pairs go through the discriminator in one batched call (one spectral-norm power
iteration per step). The discriminator normalizes each pair on its own (InstanceNorm), so the
valid samples' loss and gradients are exactly those of a batch holding them alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DiscStepResult:
    """Outcome of one discriminator step.

    Attributes:
        loss: tensor to back-propagate (clean term, plus the enhanced term unless skipped).
        loss_clean: MSE of D(clean, clean) against 1 over the whole batch.
        loss_enhanced: MSE of D(clean, enhanced) against the PESQ targets over the valid
            samples; None when skipped.
        skipped: True when no sample had a valid PESQ, so the enhanced term did not train.
        num_valid: samples that trained the enhanced term.
        pesq_fail_rate: failed PESQ samples / batch size.
    """

    loss: torch.Tensor
    loss_clean: float
    loss_enhanced: float | None
    skipped: bool
    num_valid: int
    pesq_fail_rate: float

    @property
    def loss_total(self) -> float | None:
        """The comparable discriminator loss (clean + enhanced); None for a skipped step."""
        return None if self.loss_enhanced is None else self.loss_clean + self.loss_enhanced

    def log_items(self) -> dict[str, float]:
        """Values to log; a term that did not train is left out rather than logged as 0."""
        items = {
            "disc_loss_clean": self.loss_clean,
            "pesq_fail_rate": self.pesq_fail_rate,
            "disc_skipped": float(self.skipped),
        }
        if self.loss_enhanced is not None:
            items["disc_loss_enhanced"] = self.loss_enhanced
            items["disc_loss"] = self.loss_clean + self.loss_enhanced
        return items


def discriminator_loss(
    disc: nn.Module,
    clean_mag: torch.Tensor,
    enhanced_mag: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
) -> DiscStepResult:
    """Discriminator loss with PESQ failures masked out.

    Args:
        disc: the metric discriminator, `disc(clean_mag, enhanced_mag) -> (B,)`.
        clean_mag: compressed clean magnitudes (B, F, T).
        enhanced_mag: compressed enhanced magnitudes (B, F, T); detached here.
        targets: normalized PESQ (B,) from `PesqPool.result`; ignored (may be NaN) where
            `valid` is False.
        valid: bool (B,), True where the PESQ target exists.
    Returns:
        A `DiscStepResult`; `loss` is float32 whatever the autocast state.
    """
    batch = clean_mag.shape[0]
    valid = valid.to(device=clean_mag.device, dtype=torch.bool)
    if valid.shape != (batch,) or targets.shape != (batch,):
        raise ValueError(
            f"targets {tuple(targets.shape)} and valid {tuple(valid.shape)} must be ({batch},)"
        )
    # Indexing (rather than multiplying by the mask) keeps a NaN target out of the gradient.
    good_targets = targets.to(clean_mag.device, torch.float32)[valid]
    if not torch.isfinite(good_targets).all():
        raise ValueError("a PESQ target marked valid is not finite")
    num_valid = int(good_targets.numel())
    with torch.autocast(clean_mag.device.type, enabled=False):
        clean = clean_mag.detach().float()
        enhanced = enhanced_mag.detach().float()[valid]
        refs = torch.cat([clean, clean[valid]])
        degraded = torch.cat([clean, enhanced])
        prediction = disc(refs, degraded).float()
        loss_clean = (prediction[:batch] - 1.0).pow(2).mean()
        loss = loss_clean
        if num_valid:
            loss_enhanced = (prediction[batch:] - good_targets).pow(2).mean()
            loss = loss_clean + loss_enhanced
    if num_valid:
        clean_value, enhanced_value = torch.stack([loss_clean, loss_enhanced]).tolist()
    else:
        clean_value, enhanced_value = loss_clean.item(), None
    return DiscStepResult(
        loss=loss,
        loss_clean=clean_value,
        loss_enhanced=enhanced_value,
        skipped=num_valid == 0,
        num_valid=num_valid,
        pesq_fail_rate=(batch - num_valid) / batch,
    )
