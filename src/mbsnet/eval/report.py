"""Evaluation results: per-file rows, summary.json, per_file.csv, a terminal table, plots.

Means and standard deviations are taken over the valid values of each metric only; a missing
metric is counted in ``failed`` and never replaced by a placeholder. The standard deviation is
the population one (ddof=0), as ``numpy.std``. Every file is written atomically.

Torch-free: rows travel between torchrun ranks and the summary can be rebuilt anywhere.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mbsnet import SAMPLE_RATE
from mbsnet.atomic import atomic_path

OK, PARTIAL, FAILED = "ok", "partial", "failed"
PER_FILE_CSV = "per_file.csv"


class ReportError(Exception):
    """A report cannot be produced as asked (e.g. plots without matplotlib); one line."""


@dataclass
class Row:
    """The outcome for one test file."""

    file: str
    duration: float | None = None
    """Seconds, at the noisy file's own rate; None when its header is unreadable."""
    values: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    """Metric -> one-line reason it is missing (a partial row)."""
    error: str = ""
    """Why the whole file failed (unreadable audio, wrong rate, model error, ...)."""
    chunked: bool = False

    @property
    def status(self) -> str:
        """'failed' without any metric value, 'partial' with some missing, else 'ok'."""
        if self.error or not self.values:
            return FAILED
        return PARTIAL if self.errors else OK

    def reason(self) -> str:
        """One line: the file error, or the metric reasons grouped by identical text."""
        if self.error:
            return self.error
        grouped: dict[str, list[str]] = {}
        for name, why in self.errors.items():
            grouped.setdefault(why, []).append(name)
        return "; ".join(f"{', '.join(names)}: {why}" for why, names in grouped.items())


@dataclass
class EvalReport:
    """Rows of one evaluation run (sorted by file) and what the run should tell its reader."""

    metrics: tuple[str, ...]
    source: str = ""
    rows: list[Row] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    """Files scored after soxr resampling to 16 kHz (not comparable to published tables)."""
    warnings: list[str] = field(default_factory=list)
    pairing: dict[str, Any] = field(default_factory=dict)
    """Unmatched and length-mismatched names from pairing (`PairSet.to_json_dict`)."""

    def failed_files(self) -> list[Row]:
        """Rows without a single metric value."""
        return [row for row in self.rows if row.status == FAILED]


def merge_reports(reports: Iterable[EvalReport]) -> EvalReport:
    """Join the reports of disjoint shards (e.g. torchrun ranks): rows sorted by file."""
    reports = list(reports)
    if not reports:
        raise ValueError("no reports to merge")
    first = reports[0]
    merged = EvalReport(metrics=first.metrics, source=first.source, pairing=first.pairing)
    for report in reports:
        merged.rows.extend(report.rows)
        merged.resampled.extend(report.resampled)
        merged.warnings.extend(w for w in report.warnings if w not in merged.warnings)
    merged.rows.sort(key=lambda row: row.file)
    merged.resampled.sort()
    return merged


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std())


def summarize(report: EvalReport) -> dict[str, Any]:
    """summary.json content: count, failed, mean, std (those four exactly), then extras.

    Returns:
        ``{"count": n, "failed": {metric: k}, "mean": {metric: m}, "std": {metric: s}, ...}``
        where k counts the files missing that metric (failed files included) and m, s are
        over valid values only (None when there are none). Extra keys: source, files_failed,
        files_partial, chunked, resampled, unmatched.
    """
    summary: dict[str, Any] = {"count": len(report.rows), "failed": {}, "mean": {}, "std": {}}
    for name in report.metrics:
        values = [row.values[name] for row in report.rows if name in row.values]
        summary["failed"][name] = len(report.rows) - len(values)
        summary["mean"][name], summary["std"][name] = _stats(values)
    summary["source"] = report.source
    summary["files_failed"] = [row.file for row in report.failed_files()]
    summary["files_partial"] = [row.file for row in report.rows if row.status == PARTIAL]
    summary["chunked"] = [row.file for row in report.rows if row.chunked]
    summary["resampled"] = list(report.resampled)
    summary["unmatched"] = dict(report.pairing)
    return summary


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None or not math.isfinite(value) else format(value, spec)


def per_file_csv(report: EvalReport) -> str:
    """CSV text: file, duration, one column per metric (empty when missing), status, error,
    chunked."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "duration", *report.metrics, "status", "error", "chunked"])
    for row in report.rows:
        metrics = [_fmt(row.values.get(name), ".6f") for name in report.metrics]
        writer.writerow(
            [row.file, _fmt(row.duration, ".4f"), *metrics, row.status, row.reason(),
             "true" if row.chunked else "false"]
        )
    return buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_report(report: EvalReport, out_dir: str | Path) -> dict[str, Path]:
    """Write per_file.csv and summary.json into `out_dir` (created), each atomically.

    Returns:
        {"per_file": path, "summary": path}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"per_file": out_dir / PER_FILE_CSV, "summary": out_dir / "summary.json"}
    _write_text(paths["per_file"], per_file_csv(report))
    _write_text(paths["summary"], json.dumps(summarize(report), indent=2) + "\n")
    return paths


def format_table(summary: dict[str, Any]) -> str:
    """Terminal table of a `summarize` result: metric, mean, std, valid and failed counts."""
    lines = [f"{'metric':<8} {'mean':>9} {'std':>9} {'valid':>7} {'failed':>7}"]
    for name, mean in summary["mean"].items():
        failed = summary["failed"][name]
        lines.append(
            f"{name:<8} {_fmt(mean, '.4f') or '-':>9} {_fmt(summary['std'][name], '.4f') or '-':>9}"
            f" {summary['count'] - failed:>7} {failed:>7}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- plots

def require_matplotlib() -> None:
    """Raise ReportError (one line, with the install command) when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError("--plots needs matplotlib: pip install 'mbsnet[plots]'") from None


def extremes_by_pesq(report: EvalReport) -> dict[str, Row]:
    """{"worst": row, "best": row} by PESQ among rows that have it; {} when none has."""
    scored = [row for row in report.rows if "pesq" in row.values]
    if not scored:
        return {}
    scored.sort(key=lambda row: (row.values["pesq"], row.file))
    return {"worst": scored[0], "best": scored[-1]}


def _log_spectrogram(x: np.ndarray) -> np.ndarray:
    """dB magnitude, 512-point Hann STFT with hop 128: (F, T)."""
    from scipy.signal import stft

    _, _, spec = stft(x, fs=SAMPLE_RATE, nperseg=512, noverlap=384)
    return 20.0 * np.log10(np.abs(spec) + 1e-8)


def plot_spectrograms(path: Path, title: str, panels: dict[str, np.ndarray]) -> None:
    """One PNG with a spectrogram per panel (label -> 16 kHz mono signal), shared colour scale."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    specs = {label: _log_spectrogram(np.asarray(x, np.float64)) for label, x in panels.items()}
    seconds = max(len(x) for x in panels.values()) / SAMPLE_RATE
    top = max(float(s.max()) for s in specs.values())
    fig, axes = plt.subplots(len(specs), 1, figsize=(10, 2.6 * len(specs)), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, (label, spec) in zip(axes, specs.items(), strict=True):
        image = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=top - 90,
                          vmax=top, extent=(0, seconds, 0, SAMPLE_RATE / 2000))
        ax.set_ylabel(f"{label}\nkHz")
    axes[-1].set_xlabel("seconds")
    fig.suptitle(title)
    fig.colorbar(image, ax=axes, label="dB")
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)


Loader = Callable[[str], dict[str, np.ndarray]]


def plot_extremes(report: EvalReport, out_dir: str | Path, load: Loader) -> list[Path]:
    """Spectrograms of the worst and best files by PESQ into ``out_dir/plots``.

    Args:
        report: a finished evaluation.
        out_dir: report folder.
        load: file name -> {"noisy": x, "enhanced": y, "clean": s}, 16 kHz mono arrays.

    Returns:
        The PNG paths written (none when no file has a PESQ value).
    """
    require_matplotlib()
    plot_dir = Path(out_dir) / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for which, row in extremes_by_pesq(report).items():
        path = plot_dir / f"{which}_pesq.png"
        title = f"{which} PESQ: {row.file} (PESQ {row.values['pesq']:.3f})"
        plot_spectrograms(path, title, load(row.file))
        written.append(path)
    return written
