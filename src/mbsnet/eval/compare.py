"""Per-file comparison of an evaluation with a baseline report (e.g. the noisy input's).

Means hide what a user asks first of an enhancer: which files did it make worse? Given a
baseline ``per_file.csv`` (any earlier ``mbsnet eval --out`` folder, typically ``--noisy``),
this module counts, metric by metric, the files scored lower than in the baseline, and for PESQ
those lower by more than a margin, naming the worst. Only files with a value in both reports
are compared; the others are counted, never dropped silently.

Torch-free, like ``report``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbsnet.atomic import atomic_path
from mbsnet.eval.report import PER_FILE_CSV, EvalReport

DEFAULT_WORSE_BY = 0.1
"""PESQ margin of the issue's per-file target: a file is made worse when it falls by more."""


class BaselineError(Exception):
    """A baseline report cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class MetricComparison:
    """One metric over the files that have it in both reports."""

    metric: str
    files: int
    mean_delta: float
    lower: int
    """Files scored lower than in the baseline."""
    worst_file: str
    worst_delta: float


def baseline_csv(path: str | Path) -> Path:
    """The per_file.csv that `path` names: the file itself, or the one in a report folder."""
    path = Path(path)
    return path / PER_FILE_CSV if path.is_dir() else path


def load_baseline(path: str | Path) -> dict[str, dict[str, float]]:
    """file -> {metric: value} from a per_file.csv written by `mbsnet eval` (empty cells left out).

    Raises:
        BaselineError: missing, unreadable, or not an mbsnet per-file report.
    """
    csv_path = baseline_csv(path)
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            if "file" not in header or "status" not in header:
                raise BaselineError(
                    f"{csv_path}: not a per-file report of mbsnet eval (no file/status columns)"
                )
            metrics = header[header.index("file") + 2 : header.index("status")]  # after duration
            rows: dict[str, dict[str, float]] = {}
            for line in reader:
                values = {}
                for name in metrics:
                    cell = (line.get(name) or "").strip()
                    if cell:
                        values[name] = float(cell)
                rows[line["file"]] = values
    except FileNotFoundError:
        raise BaselineError(f"{csv_path}: baseline report not found") from None
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as error:
        raise BaselineError(f"{csv_path}: unreadable baseline report ({error})") from None
    if not rows:
        raise BaselineError(f"{csv_path}: baseline report has no files")
    return rows


def _deltas(
    report: EvalReport, baseline: dict[str, dict[str, float]], metric: str
) -> dict[str, float]:
    """file -> `metric` here minus in `baseline`, for the files with a finite value in both."""
    deltas = {}
    for row in report.rows:
        here, there = row.values.get(metric), baseline.get(row.file, {}).get(metric)
        if here is not None and there is not None and math.isfinite(here - there):
            deltas[row.file] = here - there
    return deltas


def compare(report: EvalReport, baseline: dict[str, dict[str, float]]) -> list[MetricComparison]:
    """Each metric of `report` against `baseline`, over the files that have it in both."""
    out = []
    for metric in report.metrics:
        deltas = _deltas(report, baseline, metric)
        if not deltas:
            continue
        worst = min(deltas, key=lambda name: (deltas[name], name))
        out.append(MetricComparison(
            metric=metric, files=len(deltas), mean_delta=sum(deltas.values()) / len(deltas),
            lower=sum(delta < 0 for delta in deltas.values()), worst_file=worst,
            worst_delta=deltas[worst],
        ))
    return out


def pesq_worse_by(
    report: EvalReport, baseline: dict[str, dict[str, float]], margin: float
) -> list[tuple[str, float]]:
    """(file, PESQ delta) of the files whose PESQ is below the baseline's by more than
    `margin`, worst first."""
    worse = [item for item in _deltas(report, baseline, "pesq").items() if item[1] < -margin]
    return sorted(worse, key=lambda item: (item[1], item[0]))


def comparison_json(
    report: EvalReport, baseline: dict[str, dict[str, float]], source: str, margin: float
) -> dict[str, Any]:
    """vs_baseline.json content: the baseline, files compared/unmatched, per-metric results."""
    names = {row.file for row in report.rows}
    return {
        "baseline": source,
        "files_only_here": sorted(names - baseline.keys()),
        "files_only_in_baseline": sorted(baseline.keys() - names),
        "metrics": {
            c.metric: {"files": c.files, "mean_delta": c.mean_delta, "lower": c.lower,
                       "worst_file": c.worst_file, "worst_delta": c.worst_delta}
            for c in compare(report, baseline)
        },
        "pesq_margin": margin,
        "pesq_worse_by_more_than_margin": [
            {"file": name, "delta": delta}
            for name, delta in pesq_worse_by(report, baseline, margin)
        ],
    }


def write_comparison(content: dict[str, Any], out_dir: str | Path) -> Path:
    """Write `content` to out_dir/vs_baseline.json atomically; returns the path."""
    path = Path(out_dir) / "vs_baseline.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    return path


def format_comparison(content: dict[str, Any]) -> str:
    """Terminal lines: per metric the mean change, files lower and the worst; PESQ margin."""
    lines = [f"against {content['baseline']}:"]
    for metric, c in content["metrics"].items():
        lines.append(
            f"  {metric:<6} {c['mean_delta']:+.4f} on average; lower on {c['lower']} of "
            f"{c['files']} (worst {c['worst_file']} {c['worst_delta']:+.4f})"
        )
    worse = content["pesq_worse_by_more_than_margin"]
    if "pesq" in content["metrics"]:
        listed = ", ".join(f"{w['file']} {w['delta']:+.3f}" for w in worse[:5])
        more = f" and {len(worse) - 5} more" if len(worse) > 5 else ""
        lines.append(
            f"  PESQ lower by more than {content['pesq_margin']:g}: {len(worse)} file(s)"
            + (f" ({listed}{more})" if worse else "")
        )
    unmatched = len(content["files_only_here"]) + len(content["files_only_in_baseline"])
    if unmatched:
        lines.append(
            f"  not compared: {len(content['files_only_here'])} file(s) missing from the "
            f"baseline, {len(content['files_only_in_baseline'])} only in it"
        )
    return "\n".join(lines)
