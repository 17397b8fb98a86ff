"""Per-file comparison with a baseline report (mbsnet.eval.compare), without audio."""

from __future__ import annotations

import pytest

from mbsnet.eval.compare import (
    BaselineError,
    compare,
    comparison_json,
    format_comparison,
    load_baseline,
)
from mbsnet.eval.report import EvalReport, Row, write_report


def report(values: dict[str, dict[str, float]]) -> EvalReport:
    rows = [Row(file=name, duration=1.0, values=v) for name, v in sorted(values.items())]
    return EvalReport(metrics=("pesq", "stoi"), rows=rows)


BASE = {"a.wav": {"pesq": 2.0, "stoi": 0.90}, "b.wav": {"pesq": 3.0, "stoi": 0.95},
        "c.wav": {"pesq": 1.5, "stoi": 0.80}}
HERE = {"a.wav": {"pesq": 2.5, "stoi": 0.91}, "b.wav": {"pesq": 2.85, "stoi": 0.94},
        "c.wav": {"pesq": 1.45}, "d.wav": {"pesq": 4.0, "stoi": 0.99}}


def test_round_trip_through_a_written_report(tmp_path):
    write_report(report(BASE), tmp_path)
    for path in (tmp_path, tmp_path / "per_file.csv"):
        loaded = load_baseline(path)
        assert loaded.keys() == BASE.keys()
        for name, values in BASE.items():
            assert loaded[name] == pytest.approx(values)


def test_counts_deltas_and_unmatched(tmp_path):
    write_report(report(BASE), tmp_path)
    baseline = load_baseline(tmp_path)
    by_metric = {c.metric: c for c in compare(report(HERE), baseline)}
    pesq, stoi = by_metric["pesq"], by_metric["stoi"]
    assert (pesq.files, pesq.lower, pesq.worst_file) == (3, 2, "b.wav")
    assert pesq.mean_delta == pytest.approx((0.5 - 0.15 - 0.05) / 3)
    assert pesq.worst_delta == pytest.approx(-0.15)
    assert (stoi.files, stoi.lower, stoi.worst_file) == (2, 1, "b.wav")  # c has no STOI here
    content = comparison_json(report(HERE), baseline, "BASE", margin=0.1)
    assert [w["file"] for w in content["pesq_worse_by_more_than_margin"]] == ["b.wav"]
    assert content["files_only_here"] == ["d.wav"] and content["files_only_in_baseline"] == []
    text = format_comparison(content)
    assert "lower on 2 of 3 (worst b.wav -0.1500)" in text
    assert "PESQ lower by more than 0.1: 1 file(s) (b.wav -0.150)" in text
    assert "1 file(s) missing from the baseline" in text


@pytest.mark.parametrize("content, problem", [
    (None, "baseline report not found"),
    ("name,score\nx,1\n", "not a per-file report"),
    ("file,duration,pesq,status,error,chunked\nx,1.0,abc,ok,,false\n", "unreadable"),
    ("file,duration,pesq,status,error,chunked\n", "has no files"),
    (b"\xff\xfe\x00bad", "unreadable"),
])
def test_bad_baseline_is_one_line_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "per_file.csv"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(BaselineError, match=problem) as info:
        load_baseline(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
