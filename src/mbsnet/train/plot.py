"""A run's logs: steps.csv, validations.csv and epochs.csv (and TensorBoard events) written, and
drawn as a PNG.

Torch-free: `mbsnet train-plot` imports only this module (and matplotlib).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mbsnet.atomic import atomic_path

# fmt: off
STEP_FIELDS = (
    "step", "epoch", "lr", "loss", "ri", "mag", "time", "metric", "grad_norm", "disc_loss",
    "disc_loss_clean", "disc_grad_norm", "pesq_fail_rate", "disc_steps_skipped",
    "nonfinite_steps", "pesq_wait_s",
)
VALIDATION_FIELDS = (
    "step", "epoch", "valid_pesq", "valid_loss", "pesq_count", "best_pesq", "noisy_pesq",
    "clean_passthrough_snr_db", "time_s",
)
# fmt: on
EPOCH_FIELDS = ("epoch", "step", "train_loss", "valid_loss", "valid_pesq", "best_pesq", "time_s")
LOG_FILES = {
    "steps.csv": STEP_FIELDS, "validations.csv": VALIDATION_FIELDS, "epochs.csv": EPOCH_FIELDS,
}  # fmt: skip


class RunFiles:
    """Appends rows to steps.csv, validations.csv and epochs.csv (and TensorBoard events).

    A no-op when not `enabled` (every rank but 0). Missing values stay empty cells, never 0.
    A file that exists keeps its own header (a run resumed by a newer mbsnet stays aligned).
    """

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.tb: Any = None
        self._headers: dict[str, list[str]] = {}  # per file: its columns, read once
        if self.enabled:
            try:  # optional: needs the tensorboard package
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                self.tb = None

    def _append(self, name: str, fields: Sequence[str], row: dict[str, Any]) -> None:
        path = self.run_dir / name
        new = not path.exists()
        if name not in self._headers:
            header = None
            if not new:
                with path.open(newline="", encoding="utf-8") as f:
                    header = next(csv.reader(f), None)
            self._headers[name] = header or list(fields)
        with path.open("a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self._headers[name], extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _cell(row.get(k)) for k in fields})

    def step(self, row: dict[str, Any]) -> None:
        """One steps.csv row (missing values stay empty, never 0)."""
        if self.enabled:
            self._append("steps.csv", STEP_FIELDS, row)
            self._scalars("train", row, row["step"])

    def validation(self, row: dict[str, Any]) -> None:
        """One validations.csv row (every validation, step-based or at an epoch end)."""
        if self.enabled:
            self._append("validations.csv", VALIDATION_FIELDS, row)
            self._scalars("valid", row, row["step"])

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (a resume from a checkpoint of that step redoes them).

        A run killed between two checkpoints has logged steps that the resumed run trains
        again; without this they would appear twice. Each file is rewritten atomically.
        """
        if not self.enabled:
            return
        for name in LOG_FILES:
            path = self.run_dir / name
            if not path.is_file():
                continue
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                fields, rows = reader.fieldnames or [], list(reader)
            keep = [r for r in rows if not r.get("step") or int(r["step"]) <= step]
            if len(keep) == len(rows):
                continue
            with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(keep)

    def epoch(self, row: dict[str, Any]) -> None:
        """One epochs.csv row."""
        if self.enabled:
            self._append("epochs.csv", EPOCH_FIELDS, row)
            self._scalars("epoch", row, row["step"])

    def _scalars(self, prefix: str, row: dict[str, Any], step: int) -> None:
        if self.tb is None:
            return
        for key, value in row.items():
            if isinstance(value, float) and math.isfinite(value):
                self.tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


class PlotError(Exception):
    """The curves cannot be drawn (no logs, no matplotlib); the message is one line."""


def _column(rows: list[dict[str, str]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) where `key` has a finite value; empty cells (e.g. skipped) are gaps."""
    steps, values = [], []
    for row in rows:
        cell = row.get(key, "")
        if cell and math.isfinite(float(cell)):
            steps.append(int(row["step"]))
            values.append(float(cell))
    return steps, values


def _read(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def plot_run(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Draw training loss (and discriminator loss) and validation PESQ against the step.

    Args:
        run_dir: a folder written by `mbsnet train`.
        out: PNG path; default RUN_DIR/curves.png.
    Returns:
        The PNG path.
    Raises:
        PlotError: no steps.csv rows, or matplotlib is not installed.
    """
    run_dir = Path(run_dir)
    steps, validations = _read(run_dir / "steps.csv"), _read(run_dir / "validations.csv")
    if not steps:
        raise PlotError(f"{run_dir}: no training steps logged (steps.csv missing or empty)")
    try:
        import matplotlib
    except ImportError:
        raise PlotError("plotting needs matplotlib: pip install 'mbsnet[plots]'") from None
    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for key in ("loss", "disc_loss"):
        x, y = _column(steps, key)
        if x:
            top.plot(x, y, label=key, linewidth=1)
    top.set_ylabel("training loss")
    top.legend()
    x, y = _column(validations, "valid_pesq")
    bottom.plot(x, y, marker="o", label="enhanced")
    x, y = _column(validations, "noisy_pesq")
    if x:
        bottom.plot(x, y, linestyle="--", color="gray", label="noisy input")
        bottom.legend()
    bottom.set_ylabel("validation PESQ (wb)")
    bottom.set_xlabel("step")
    fig.tight_layout()
    out = Path(out) if out is not None else run_dir / "curves.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out
