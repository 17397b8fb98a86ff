"""`mbsnet eval`: report files, exit codes, options, plots, and torchrun with two processes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from vbd_files import copy_pairs

from mbsnet import distrib
from mbsnet.audio import resample
from mbsnet.checkpoint import save_checkpoint
from mbsnet.cli import main
from mbsnet.eval import EXTENDED_METRICS, METRICS
from mbsnet.models import create_model, preset_config

SHORT = ("p232_052", "p232_170", "p257_054", "p257_143")
TOLERANCE = {"pesq": 1e-3, "csig": 0.02, "cbak": 0.02, "covl": 0.02, "ssnr": 0.05, "stoi": 0.005}
COLUMN = {"pesq": "py_PESQ_wb", "csig": "py_CSIG", "cbak": "py_CBAK", "covl": "py_COVL"}
COLUMN |= {"ssnr": "py_SSNR", "stoi": "py_STOI"}


def run(*args: object):
    return CliRunner().invoke(main, ["eval", *map(str, args)])




def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def short_dir(shared_data, tmp_path_factory) -> Path:
    return copy_pairs(shared_data, tmp_path_factory.mktemp("short"), SHORT)


@pytest.fixture(scope="module")
def noisy_run(short_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("noisy_report")
    result = run("--test-dir", short_dir, "--noisy", "--out", out, "--workers", 0, "--quiet")
    assert result.exit_code == 0, result.output
    return out


def test_noisy_row_report_matches_published(noisy_run, shared_data):
    table = shared_data / "reference" / "vbd_published_noisy_metrics_for_our_files.csv"
    reference = {f"{r['utt']}.wav": r for r in read_csv(table)}
    rows = read_csv(noisy_run / "per_file.csv")
    assert list(rows[0]) == ["file", "duration", *METRICS, "status", "error", "chunked"]
    assert [row["file"] for row in rows] == [f"{n}.wav" for n in SHORT]
    for row in rows:
        assert (row["status"], row["error"], row["chunked"]) == ("ok", "", "false")
        for name, tol in TOLERANCE.items():
            want = float(reference[row["file"]][COLUMN[name]])
            assert float(row[name]) == pytest.approx(want, abs=tol), (row["file"], name)


def test_summary_json_shape(noisy_run):
    summary = json.loads((noisy_run / "summary.json").read_text())
    assert list(summary)[:4] == ["count", "failed", "mean", "std"]
    assert summary["count"] == len(SHORT)
    for key in ("failed", "mean", "std"):
        assert list(summary[key]) == list(METRICS)
    assert summary["failed"] == dict.fromkeys(METRICS, 0)
    rows = read_csv(noisy_run / "per_file.csv")
    pesq = [float(row["pesq"]) for row in rows]
    assert summary["mean"]["pesq"] == pytest.approx(np.mean(pesq), abs=1e-6)
    assert summary["std"]["pesq"] == pytest.approx(np.std(pesq), abs=1e-6)
    assert summary["files_failed"] == [] and summary["source"].startswith("noisy")
    assert summary["unmatched"] == {"noisy_only": [], "clean_only": [], "length_mismatch": []}


def test_enhanced_dir_and_extended(shared_data, tmp_path):
    test_dir = copy_pairs(shared_data, tmp_path / "set", ("p257_022", "p232_006"), enhanced=True)
    out = tmp_path / "out"
    result = run("--noisy-dir", test_dir / "noisy", "--clean-dir", test_dir / "clean",
                 "--enhanced-dir", test_dir / "enhanced", "--out", out, "--workers", 0,
                 "--extended", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["mean"]) == list(METRICS + EXTENDED_METRICS)
    assert summary["mean"]["pesq"] > 3.0 and summary["mean"]["si_sdr"] > 10.0
    assert "pesq" in result.output and "si_sdr" in result.output  # the terminal table


def test_failed_file_exit_code_and_unmatched_listed(short_dir, tmp_path):
    test_dir = tmp_path / "set"
    shutil.copytree(short_dir, test_dir)
    data = (test_dir / "noisy" / "p232_170.wav").read_bytes()
    (test_dir / "noisy" / "p232_170.wav").write_bytes(data[:1000])  # truncated
    (test_dir / "clean" / "p257_143.wav").unlink()
    result = run("--test-dir", test_dir, "--noisy", "--out", tmp_path / "out", "--workers", 0,
                 "--quiet")
    assert result.exit_code == 1
    assert "1 noisy file(s) have no clean file and are NOT evaluated: p257_143.wav" in result.output
    assert "error: p232_170.wav: " in result.output and "truncated" in result.output
    rows = read_csv(tmp_path / "out" / "per_file.csv")
    assert [row["status"] for row in rows] == ["ok", "failed", "ok"]
    assert rows[1]["pesq"] == "" and "truncated" in rows[1]["error"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["count"] == 3 and summary["failed"]["pesq"] == 1
    assert summary["files_failed"] == ["p232_170.wav"]
    assert summary["unmatched"]["noisy_only"] == ["p257_143.wav"]


def test_resample_warns_once(short_dir, tmp_path):
    for side in ("noisy", "clean"):
        (tmp_path / "set" / side).mkdir(parents=True)
        for name in SHORT[:2]:
            x, _ = sf.read(short_dir / side / f"{name}.wav", dtype="float32")
            sf.write(tmp_path / "set" / side / f"{name}.wav", resample(x[None], 16000, 8000)[0],
                     8000)
    strict = run("--test-dir", tmp_path / "set", "--noisy", "--out", tmp_path / "a", "--workers", 0)
    assert strict.exit_code == 1 and strict.output.count("is at 8000 Hz") == 2
    loose = run("--test-dir", tmp_path / "set", "--noisy", "--out", tmp_path / "b", "--workers", 0,
                "--resample")
    assert loose.exit_code == 0, loose.output
    assert loose.output.count("NOT comparable to published tables") == 1
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["resampled"] == [f"{n}.wav" for n in SHORT[:2]]


def test_checkpoint_max_seconds_and_plots(short_dir, tmp_path):
    ckpt = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    save_checkpoint(ckpt, create_model("mbsnet", preset_config("tiny")))
    out = tmp_path / "out"
    result = run("--test-dir", short_dir, "--checkpoint", ckpt, "--out", out, "--workers", 0,
                 "--max-seconds", 2.15, "--device", "cpu", "--plots", "--quiet")
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "per_file.csv")
    assert [row["chunked"] for row in rows] == ["true", "false", "true", "true"]  # > 2.15 s
    assert all(row["status"] == "ok" for row in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == f"checkpoint {ckpt}" and len(summary["chunked"]) == 3
    for which in ("worst", "best"):
        png = out / "plots" / f"{which}_pesq.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_without_matplotlib_is_one_line(short_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = run("--test-dir", short_dir, "--noisy", "--out", tmp_path, "--plots", "--workers", 0)
    assert result.exit_code == 1
    assert result.output.strip() == "Error: --plots needs matplotlib: pip install 'mbsnet[plots]'"
    assert not (tmp_path / "summary.json").exists()  # refused before any work


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "give either --test-dir or both"),
        (("--noisy-dir", "n"), "--noisy-dir and --clean-dir go together"),
        (("--test-dir", "t", "--checkpoint", "c", "--enhanced-dir", "e"), "give one of"),
        (("--test-dir", "t", "--noisy", "--max-seconds", "5"), "--max-seconds applies to"),
        (("--test-dir", "t", "--noisy", "--enhanced-dir", "e"), "give one of"),
        (("--test-dir", "missing"), "test folder not found: missing"),
        (("--test-dir", "t", "--noisy", "--worse-by", "0.2"), "--worse-by applies with --baseline"),
    ],
)
def test_usage_errors(tmp_path, args, message):
    result = run(*args, "--out", tmp_path)
    assert result.exit_code in (1, 2) and message in result.output


def test_help_documents_exit_code():
    result = CliRunner().invoke(main, ["eval", "--help"])
    assert result.exit_code == 0
    assert "1 if any file failed entirely" in " ".join(result.output.split())


def test_distrib_helpers_without_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distrib.init_from_env() == (0, 1)
    assert distrib.is_main() and distrib.world_size() == 1
    assert distrib.shard(list(range(7)), 1, 3) == [1, 4]
    shards = [distrib.shard("abcdefg", r, 3) for r in range(3)]
    assert sorted(item for part in shards for item in part) == list("abcdefg")
    assert distrib.gather_to_rank0({"x": 1}) == [{"x": 1}]
    assert distrib.all_gather(5) == [5]
    distrib.barrier()
    distrib.cleanup()
    with pytest.raises(ValueError):
        distrib.shard([1], 2, 2)


def test_torchrun_two_processes_match_single_process(short_dir, noisy_run, tmp_path):
    """Each rank scores a shard; rank 0 merges. Also checks `python -m mbsnet.cli` runs."""
    test_dir = tmp_path / "set"
    shutil.copytree(short_dir, test_dir)
    (test_dir / "noisy" / "broken.wav").write_bytes(b"RIFF not really")
    shutil.copy(test_dir / "clean" / "p232_052.wav", test_dir / "clean" / "broken.wav")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "mbsnet.cli", "eval", "--test-dir", str(test_dir), "--noisy",
           "--out", str(out),
           "--workers", "2", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the broken file fails on every rank
    rows = read_csv(out / "per_file.csv")
    assert [row["file"] for row in rows] == ["broken.wav", *(f"{n}.wav" for n in SHORT)]
    assert rows[0]["status"] == "failed" and "broken.wav" in rows[0]["error"]
    assert rows[1:] == read_csv(noisy_run / "per_file.csv")
    merged = json.loads((out / "summary.json").read_text())
    single = json.loads((noisy_run / "summary.json").read_text())
    assert merged["count"] == 5 and merged["failed"] == dict.fromkeys(METRICS, 1)
    assert merged["mean"] == pytest.approx(single["mean"], abs=1e-9)
    assert sorted(p.name for p in out.iterdir()) == ["per_file.csv", "summary.json"]


def test_baseline_counts_files_made_worse(shared_data, noisy_run, tmp_path):
    test_dir = copy_pairs(shared_data, tmp_path / "set", SHORT, enhanced=True)
    out = tmp_path / "out"
    result = run("--test-dir", test_dir, "--enhanced-dir", test_dir / "enhanced", "--out", out,
                 "--baseline", noisy_run, "--worse-by", 0.0, "--workers", 0, "--quiet")
    assert result.exit_code == 0, result.output
    content = json.loads((out / "vs_baseline.json").read_text())
    before = {row["file"]: row for row in read_csv(noisy_run / "per_file.csv")}
    after = {row["file"]: row for row in read_csv(out / "per_file.csv")}
    for name in METRICS:
        deltas = [float(after[f][name]) - float(before[f][name]) for f in before]
        got = content["metrics"][name]
        assert got["files"] == len(SHORT) and got["lower"] == sum(d < 0 for d in deltas)
        assert got["mean_delta"] == pytest.approx(np.mean(deltas), abs=1e-5)
    pesq_drops = sorted(f for f in before if float(after[f]["pesq"]) < float(before[f]["pesq"]))
    assert sorted(w["file"] for w in content["pesq_worse_by_more_than_margin"]) == pesq_drops
    assert f"against {noisy_run}:" in result.output
    assert "PESQ lower by more than 0:" in result.output


def test_bad_baseline_fails_before_scoring(short_dir, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,score\n")
    out = tmp_path / "out"
    result = run("--test-dir", short_dir, "--noisy", "--out", out, "--baseline", bad, "--quiet")
    assert result.exit_code == 1
    assert f"{bad}: not a per-file report of mbsnet eval" in result.output
    assert not out.exists()
