"""The training loop: exact resume, checkpoints, non-finite steps, discriminator masking."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from mbsnet.checkpoint import model_from_checkpoint
from mbsnet.cli import main
from mbsnet.train import loop
from mbsnet.train import step as train_step_module
from mbsnet.train.config import TrainConfig
from mbsnet.train.pesq_targets import PesqBatch

SR = 16000


def _write_pairs(folder, count, seed):
    rng = np.random.default_rng(seed)
    for split in ("clean", "noisy"):
        (folder / split).mkdir(parents=True)
    for i in range(count):
        n = int(SR * (1.0 + 0.2 * i))
        t = np.arange(n) / SR
        clean = 0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t))
        noisy = clean + 0.05 * rng.standard_normal(n)
        sf.write(folder / "clean" / f"u{i}.wav", clean.astype(np.float32), SR)
        sf.write(folder / "noisy" / f"u{i}.wav", noisy.astype(np.float32), SR)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    _write_pairs(root / "train", 6, 0)
    _write_pairs(root / "test", 2, 1)
    return root


def _cfg(data_dir, disc=False, **train):
    cfg = TrainConfig.defaults()
    overrides = [
        'model.preset="tiny"',
        f'data.data_dir="{data_dir}"',
        "data.segment_seconds=0.5",
        "train.batch_size=2",
        "train.num_workers=0",
        "train.log_every_steps=1",
        "optim.warmup_steps=2",
        "checkpoint.every_steps=0",
        "checkpoint.every_minutes=0",
        'validation.mode="cuts"',
        "validation.cut_seconds=1.0",
        f"discriminator.enabled={'true' if disc else 'false'}",
        "discriminator.pesq_workers=0",
        "validation.pesq_workers=0",
        "early_stopping.patience=0",
    ]
    overrides += [f"train.{k}={v}" for k, v in train.items()]
    return cfg.apply_overrides(overrides)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _results(path):
    """The rows of a log without their wall-clock columns (which differ between any two runs)."""
    return [{k: v for k, v in row.items() if not k.endswith("time_s")} for row in _rows(path)]


def _assert_same_final_state(run_a, run_b):
    """latest.pt of both runs: equal progress, bitwise-equal generator (and discriminator)."""
    a, b = (torch.load(r / "checkpoints/latest.pt", weights_only=True) for r in (run_a, run_b))
    assert a["extra"]["train"]["progress"] == b["extra"]["train"]["progress"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for key, value in (a["extra"]["train"]["disc"] or {}).items():
        assert torch.equal(value, b["extra"]["train"]["disc"][key]), key


@pytest.mark.parametrize("batch, accum", [(2, 1), (1, 2)])
def test_resume_is_bitwise_identical(data_dir, tmp_path, batch, accum):
    # The default cosine schedule: --stop-at-step pauses without changing its length.
    cfg = _cfg(data_dir, disc=True, batch_size=batch, grad_accum=accum)
    loop.train(cfg, tmp_path / "full", max_steps=5, progress=False)
    # 3 steps per epoch: the first half stops, and the resume starts, mid-epoch 0.
    loop.train(cfg, tmp_path / "half", max_steps=5, stop_at_step=2, progress=False)
    mid = torch.load(tmp_path / "half/checkpoints/latest.pt", weights_only=True)
    assert mid["extra"]["train"]["progress"]["batch"] == 2 * accum
    assert "stopped at step 2 as asked" in (tmp_path / "half/train.log").read_text()
    assert not (tmp_path / "half/checkpoints/best.pt").exists()  # no validation at the pause
    loop.train(None, tmp_path / "half", resume=True, progress=False)
    _assert_same_final_state(tmp_path / "full", tmp_path / "half")


def test_resume_with_new_length_warns_and_stop_at_past_step_fails(data_dir, tmp_path):
    loop.train(_cfg(data_dir), tmp_path, max_steps=4, stop_at_step=2, progress=False)
    with pytest.raises(loop.TrainingError, match="already at step 2"):
        loop.train(None, tmp_path, resume=True, stop_at_step=2, progress=False)
    assert loop.train(None, tmp_path, resume=True, max_steps=3, progress=False).step == 3
    log = (tmp_path / "train.log").read_text()
    assert "train.max_steps changed from 4 to 3: the LR schedule is recomputed" in log


# A tiny CPU run without the discriminator, as `--set` options for `mbsnet train`.
TINY_RUN = [
    f"--set={setting}"
    for setting in (
        'model.preset="tiny"', "data.segment_seconds=0.5", "train.batch_size=2",
        "train.num_workers=0", "discriminator.enabled=false", "validation.pesq_workers=0",
    )
]  # fmt: skip


def _train_cli(*args):
    return CliRunner().invoke(main, ["train", "--quiet", *args])


def test_cli_checkpoints_load_and_enhance(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = _train_cli(
        "--data-dir",
        str(data_dir),
        "--run-dir",
        str(run_dir),
        "--max-steps",
        "2",
        *TINY_RUN,
    )
    assert result.exit_code == 0, result.output
    for name in ("latest.pt", "best.pt"):
        ckpt = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        assert ckpt["extra"]["train"]["progress"]["step"] == 2
        model_from_checkpoint(run_dir / "checkpoints" / name)
    for name in ("train.log", "steps.csv", "config.toml"):
        assert (run_dir / name).is_file()
    (validation,) = _rows(run_dir / "validations.csv")  # 2 steps: one validation, at the end
    assert validation["step"] == "2" and float(validation["valid_pesq"]) > 1.0
    out = tmp_path / "enhanced.wav"
    noisy = data_dir / "test" / "noisy" / "u0.wav"
    result = CliRunner().invoke(
        main,
        [
            "enhance",
            str(noisy),
            "-o",
            str(out),
            "--checkpoint",
            str(run_dir / "checkpoints" / "best.pt"),
            "--device",
            "cpu",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sf.info(out).frames == sf.info(noisy).frames
    result = CliRunner().invoke(main, ["train-plot", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_failed_save_keeps_previous_latest(data_dir, tmp_path, monkeypatch):
    cfg = _cfg(data_dir).apply_overrides(["checkpoint.every_steps=1"])
    real_save, calls = torch.save, []

    def failing_save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:  # die half-way through the second write
            with open(f, "wb") as handle:
                handle.write(b"partial")
            raise KeyboardInterrupt("killed during save")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg, tmp_path, max_steps=3, progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    ckpt = torch.load(tmp_path / "checkpoints/latest.pt", weights_only=True)
    assert ckpt["extra"]["train"]["progress"]["step"] == 1
    model_from_checkpoint(tmp_path / "checkpoints/latest.pt")


def _nan_on(monkeypatch, bad_calls):
    real, calls = train_step_module.losses.generator_loss, []

    def patched(*args, **kwargs):
        result = real(*args, **kwargs)
        if torch.is_grad_enabled():  # training steps only, not validation
            calls.append(1)
            if len(calls) in bad_calls:
                result.total = result.total * float("nan")
        return result

    monkeypatch.setattr(train_step_module.losses, "generator_loss", patched)


def test_consecutive_nonfinite_steps_stop_naming_the_step(data_dir, tmp_path, monkeypatch):
    _nan_on(monkeypatch, bad_calls=range(2, 100))
    cfg = _cfg(data_dir, max_consecutive_nonfinite=3)
    with pytest.raises(loop.TrainingError, match="stopped at step 4: 3 consecutive"):
        loop.train(cfg, tmp_path, max_steps=6, progress=False)


def test_single_nonfinite_step_is_skipped_and_counted(data_dir, tmp_path, monkeypatch):
    _nan_on(monkeypatch, bad_calls={2})
    progress = loop.train(_cfg(data_dir), tmp_path, max_steps=3, progress=False)
    assert progress.step == 3 and progress.nonfinite_total == 1
    rows = _rows(tmp_path / "steps.csv")
    assert [r["nonfinite_steps"] for r in rows] == ["0", "1", "1"]
    ckpt = torch.load(tmp_path / "checkpoints/latest.pt", weights_only=True)
    assert all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )


class _StubPool:
    """PesqPool stand-in: sample i is invalid when i is in `invalid` (or all: None)."""

    def __init__(self, invalid):
        self.invalid, self.last_wait_s = invalid, 0.0

    def submit(self, clean, enhanced, lengths):
        return len(lengths)

    def result(self, size):
        bad = set(range(size)) if self.invalid is None else self.invalid
        valid = torch.tensor([i not in bad for i in range(size)])
        scores = torch.where(valid, torch.tensor(0.5), torch.tensor(float("nan")))
        return PesqBatch(scores, valid, [None if v else "stub" for v in valid])

    def close(self):
        pass


@pytest.mark.parametrize("invalid", [{0}, None])
def test_discriminator_masking_in_the_loop(data_dir, tmp_path, invalid):
    cfg = _cfg(data_dir, disc=True)
    loop.train(
        cfg, tmp_path, max_steps=3, progress=False, pool_factory=lambda workers: _StubPool(invalid)
    )
    rows = _rows(tmp_path / "steps.csv")
    assert len(rows) == 3 and all(float(r["pesq_fail_rate"]) > 0 for r in rows)
    if invalid is None:
        assert all(r["disc_loss"] == "" for r in rows)
        assert [r["disc_steps_skipped"] for r in rows] == ["1", "2", "3"]
    else:
        assert all(float(r["disc_loss"]) > 0 for r in rows)
        assert all(r["disc_steps_skipped"] == "0" for r in rows)
    assert all(float(r["disc_grad_norm"]) > 0 for r in rows)  # pre-clip, logged either way


def test_validation_uses_its_own_fixed_items(data_dir, tmp_path, monkeypatch):
    seen = []
    real = loop.validate

    def spy(model, dataset, *args, **kwargs):
        seen.append([dataset[i][1].clone() for i in range(len(dataset))])
        return real(model, dataset, *args, **kwargs)

    monkeypatch.setattr(loop, "validate", spy)
    loop.train(_cfg(data_dir), tmp_path, max_steps=6, progress=False)  # 2 epochs
    assert len(seen) == 3  # the noisy input's baseline, then one validation per epoch
    for first, *later in zip(*seen, strict=True):
        assert first.shape == (SR,)  # validation.cut_seconds, not the 0.5 s train segment
        assert all(torch.equal(first, item) for item in later)
    assert len(_rows(tmp_path / "epochs.csv")) == 2


def test_effective_batch_warning(data_dir, tmp_path):
    loop.train(_cfg(data_dir), tmp_path / "small", max_steps=1, progress=False)
    assert "effective batch size 2 is below 4" in (tmp_path / "small/train.log").read_text()
    cfg = _cfg(data_dir, grad_accum=2)
    loop.train(cfg, tmp_path / "ok", max_steps=1, progress=False)
    log = (tmp_path / "ok/train.log").read_text()
    assert "effective batch size 4 (batch 2 x grad_accum 2" in log and "below 4" not in log


def test_print_config_and_overrides(tmp_path):
    import tomllib

    result = _train_cli("--print-config", "--set", "train.batch_size=8")
    assert result.exit_code == 0, result.output
    parsed = tomllib.loads(result.output)
    assert parsed["train"]["batch_size"] == 8
    path = tmp_path / "cfg.toml"
    path.write_text(result.output)
    assert TrainConfig.from_toml(path).train.batch_size == 8
    result = _train_cli("--print-config", "--set", "train.bogus=1")
    assert result.exit_code != 0
    assert "train.bogus" in result.output and len(result.output.strip().splitlines()) == 1


def test_resume_rejects_another_model(data_dir, tmp_path):
    from mbsnet.checkpoint import CheckpointError
    from mbsnet.models import create_model, preset_config
    from mbsnet.train.state import read_train_state, restore_train_state

    loop.train(_cfg(data_dir), tmp_path, max_steps=1, progress=False)
    path = tmp_path / "checkpoints/latest.pt"
    other = create_model("mbsnet", preset_config("base"))
    optimizer = torch.optim.AdamW(other.parameters())
    with pytest.raises(CheckpointError, match="another model config"):
        restore_train_state(read_train_state(path), path, other, optimizer)


def test_resume_of_a_checkpoint_older_than_a_config_field(data_dir, tmp_path):
    """A run written before `causal` and `lookahead_frames` existed resumes (their defaults)."""
    loop.train(_cfg(data_dir), tmp_path, max_steps=1, progress=False)
    path = tmp_path / "checkpoints/latest.pt"
    ckpt = torch.load(path, weights_only=True)
    for name in ("causal", "lookahead_frames"):
        del ckpt["config"][name]
    torch.save(ckpt, path)
    progress = loop.train(None, tmp_path, resume=True, max_steps=2, progress=False)
    assert progress.step == 2


def test_ddp_two_cpu_processes(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "mbsnet",
        "train",
        "--quiet",
        "--data-dir",
        str(data_dir),
        "--run-dir",
        str(run_dir),
        "--max-steps",
        "3",
        "--set",
        'model.preset="tiny"',
        "--set",
        "data.segment_seconds=0.5",
        "--set",
        "train.batch_size=1",
        "--set",
        "train.num_workers=0",
        "--set",
        "discriminator.pesq_workers=0",
        "--set",
        "validation.pesq_workers=0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    assert "2 process(es)" in log and "parameters identical on all 2 processes" in log
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "best.pt",
        "epoch_0000.pt",
        "latest.pt",
    ]
    assert len(_rows(run_dir / "epochs.csv")) == 1  # one writer: no duplicated rows
    model_from_checkpoint(run_dir / "checkpoints/latest.pt")


def test_sigterm_saves_and_exits_then_resumes(data_dir, tmp_path, monkeypatch):
    import signal

    real, calls = loop.train_step, []

    def step_then_signal(run, micro_batches):
        calls.append(1)
        if len(calls) == 2:  # the signal arrives during step 2
            os.kill(os.getpid(), signal.SIGTERM)
        return real(run, micro_batches)

    monkeypatch.setattr(loop, "train_step", step_then_signal)
    progress = loop.train(_cfg(data_dir), tmp_path, max_steps=5, progress=False)
    assert progress.step == 2
    log = (tmp_path / "train.log").read_text()
    assert "stop requested (SIGTERM)" in log and f"--resume {tmp_path}" in log
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    ckpt = torch.load(tmp_path / "checkpoints/latest.pt", weights_only=True)
    assert ckpt["extra"]["train"]["progress"]["step"] == 2
    monkeypatch.setattr(loop, "train_step", real)
    with pytest.raises(loop.TrainingError, match="already holds a run"):
        loop.train(_cfg(data_dir), tmp_path, max_steps=5, progress=False)
    assert loop.train(None, tmp_path, resume=True, progress=False).step == 5


def test_overfit_reports_pesq(data_dir, tmp_path):
    result = _train_cli(
        "--data-dir",
        str(data_dir),
        "--run-dir",
        str(tmp_path),
        "--max-steps",
        "2",
        "--overfit",
        "2",
        *TINY_RUN,
    )
    assert result.exit_code == 0, result.output
    log = (tmp_path / "train.log").read_text()
    assert "train: 2 pairs" in log and "validation: 2 whole files" in log
    assert "overfit on 2 training pair(s): PESQ" in log
    ckpt = torch.load(tmp_path / "checkpoints/latest.pt", weights_only=True)
    assert ckpt["extra"]["train"]["progress"]["overfit"] == 2


def test_mixing_mode_trains(data_dir, tmp_path):
    def dirs(*parts):
        return "[" + ", ".join(f'"{data_dir.joinpath(*p.split("/"))}"' for p in parts) + "]"

    cfg = _cfg(data_dir).apply_overrides([
        'data.mode="mixing"', f"data.speech_dirs={dirs('train/clean')}",
        f"data.noise_dirs={dirs('train/noisy')}", f"data.valid_speech_dirs={dirs('test/clean')}",
        f"data.valid_noise_dirs={dirs('test/noisy')}", "validation.mixing_items=2",
    ])  # fmt: skip
    progress = loop.train(cfg, tmp_path, max_steps=2, progress=False)
    assert progress.step == 2 and np.isfinite(progress.best_pesq)
    assert "validation: 2" in (tmp_path / "train.log").read_text()


def test_best_follows_every_gain_while_patience_needs_min_delta(monkeypatch, tmp_path):
    import logging
    from types import SimpleNamespace

    from mbsnet.train import loop
    from mbsnet.train.state import Progress

    scores = iter([1.50, 1.505, 1.52, 1.40])
    monkeypatch.setattr(loop, "validate", lambda *args, **kwargs: (next(scores), 0.1, 6, 20.0))
    saved: list[int] = []
    monkeypatch.setattr(loop, "save_to", lambda run, path: saved.append(run.progress.step))
    run = SimpleNamespace(
        progress=Progress(),
        cfg=SimpleNamespace(early_stopping=SimpleNamespace(min_delta=0.01, patience=10)),
        model=None, valid_set=None, device=None, ckpt_dir=tmp_path,
        logger=logging.getLogger("test"), last_pesq=float("nan"), valid_pool=None, stop=None,
        files=SimpleNamespace(validation=lambda row: None),
    )  # fmt: skip
    history = []
    for step in range(4):
        run.progress.step = step
        loop._validate(run)
        history.append((run.progress.best_pesq, run.progress.bad_validations))
    # 1.505 beats 1.50 (best.pt saved) but not by min_delta (a bad validation for patience);
    # 1.52 beats the patience reference 1.50 by more than min_delta (counter reset).
    assert history == [(1.50, 0), (1.505, 1), (1.52, 0), (1.52, 1)]
    assert saved == [0, 1, 2]


def test_cli_mixing_mode_holds_out_validation_files(data_dir, tmp_path):
    speech_noise = (
        "--speech",
        str(data_dir / "train/clean"),
        "--noise",
        str(data_dir / "train/noisy"),
    )
    result = _train_cli("--print-config", *speech_noise)
    assert result.exit_code == 0, result.output
    assert 'mode = "mixing"' in result.output and "valid_speech_dirs = []" in result.output
    both = _train_cli("--print-config", "--data-dir", str(data_dir), "--speech", str(data_dir))
    assert both.exit_code != 0 and "not both" in both.output
    by_duration = _train_cli(
        "--print-config", *speech_noise, "--set", "data.speech_sampling=duration"
    )
    assert by_duration.exit_code == 0 and 'speech_sampling = "duration"' in by_duration.output
    bad = _train_cli("--print-config", *speech_noise, "--set", "data.speech_sampling=minutes")
    assert bad.exit_code != 0 and "data.speech_sampling" in bad.output
    result = _train_cli(
        *speech_noise,
        "--run-dir", str(tmp_path), "--max-steps", "1", "--set", "validation.mixing_items=2",
        "--set", "data.valid_holdout=0.3", *TINY_RUN,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    log = (tmp_path / "train.log").read_text()
    # 6 speech files: round(0.3 * 6) = 2 held out, 4 left to train on.
    assert "mixing train: 4 mixtures per epoch" in log and "mixing validation: 2 fixed" in log


def test_overfit_recipe_applies_before_set(tmp_path):
    import tomllib

    from mbsnet.train.config import OVERFIT_SETTINGS

    parsed = tomllib.loads(_train_cli("--print-config", "--overfit", "6").output)
    for setting in OVERFIT_SETTINGS:
        key, value = setting.split("=")
        section, name = key.split(".")
        assert parsed[section][name] == tomllib.loads(f"v = {value}")["v"], setting
    result = _train_cli("--print-config", "--overfit", "6", "--set", "train.max_steps=7")
    assert tomllib.loads(result.output)["train"]["max_steps"] == 7


def test_validation_pesq_in_pool_matches_in_process(data_dir):
    from mbsnet.scoring_pool import ScoringPool
    from mbsnet.train.data import ValidationSet, find_paired_splits

    _, valid_scan = find_paired_splits(data_dir)
    dataset = ValidationSet(valid_scan.pairs, "full", 1.0, 1)
    model = torch.nn.Identity()

    def noisy_as_output(noisy, clean, lengths):
        return noisy, 0.0

    here = loop.validate(model, dataset, noisy_as_output, torch.device("cpu"))
    with ScoringPool(1) as pool:
        pooled = loop.validate(model, dataset, noisy_as_output, torch.device("cpu"), pool)
    assert here[2] == pooled[2] == len(dataset)
    assert here[0] == pytest.approx(pooled[0], abs=1e-6) and np.isfinite(here[0])


def test_clean_passthrough_snr_measures_what_the_model_does_to_clean_speech(data_dir):
    from mbsnet.train.data import ValidationSet, find_paired_splits

    _, valid_scan = find_paired_splits(data_dir)
    dataset = ValidationSet(valid_scan.pairs, "full", 1.0, 1)
    model, cpu = torch.nn.Identity(), torch.device("cpu")

    def clean_passthrough_snr(model, dataset, enhance, device, should_stop=None):
        def noisy_as_output(noisy, clean, lengths):
            return noisy, 0.0

        return loop.validate(model, dataset, noisy_as_output, device,
                             should_stop=should_stop, enhance_clean=enhance)[3]  # fmt: skip

    halved = clean_passthrough_snr(model, dataset, lambda x, n: 0.5 * x, cpu)
    assert halved == pytest.approx(10 * np.log10(4.0), abs=1e-6)  # error = half the signal
    assert clean_passthrough_snr(model, dataset, lambda x, n: x, cpu) > 150
    with pytest.raises(loop.ValidationInterrupted):
        clean_passthrough_snr(model, dataset, lambda x, n: x, cpu, should_stop=lambda: True)


def test_validation_pesq_is_eval_pesq(tmp_path):
    """The same real pair scored by validation (in process and in a worker) and by eval."""
    import shutil
    from pathlib import Path

    from mbsnet.eval.pairs import find_test_dir_pairs
    from mbsnet.eval.pipeline import evaluate
    from mbsnet.scoring_pool import ScoringPool
    from mbsnet.train.data import ValidationSet, find_paired_splits

    examples = Path(__file__).parents[1] / "examples"
    for split in ("train", "test"):
        for side in ("clean", "noisy"):
            (tmp_path / split / side).mkdir(parents=True)
            shutil.copy(examples / f"{side}_p232_005.wav", tmp_path / split / side / "p.wav")
    (row,) = evaluate(find_test_dir_pairs(tmp_path / "test").pairs, None, workers=0).rows
    _, valid_scan = find_paired_splits(tmp_path)
    dataset = ValidationSet(valid_scan.pairs, "full")

    def noisy_as_output(noisy, clean, lengths):
        return noisy, 0.0

    here = loop.validate(torch.nn.Identity(), dataset, noisy_as_output, torch.device("cpu"))
    with ScoringPool(1) as pool:
        pooled = loop.validate(
            torch.nn.Identity(), dataset, noisy_as_output, torch.device("cpu"), pool
        )
    assert 1.0 < row.values["pesq"] < 4.0
    assert here[0] == pooled[0] == row.values["pesq"]  # the same number, not just close

    class DeadPool:  # every submit finds a dead worker, as after an out-of-memory kill
        workers = 1

        def submit(self, *args):
            raise ScoringPoolError("a PESQ worker process died")

        def results(self, tasks):
            raise AssertionError("nothing was submitted")

    from mbsnet.scoring_pool import ScoringPoolError

    rescued = loop.validate(
        torch.nn.Identity(), dataset, noisy_as_output, torch.device("cpu"), DeadPool()
    )
    assert rescued[0] == here[0] and rescued[2] == 1  # scored here instead of crashing


def test_bf16_autocast_trains_with_the_discriminator(data_dir, tmp_path):
    cfg = _cfg(data_dir, disc=True, amp="bf16")
    progress = loop.train(cfg, tmp_path, max_steps=2, progress=False)
    assert progress.step == 2 and progress.nonfinite_total == 0
    rows = _rows(tmp_path / "steps.csv")
    assert all(np.isfinite(float(r["loss"])) and float(r["disc_loss"]) > 0 for r in rows)
    ckpt = torch.load(tmp_path / "checkpoints/latest.pt", weights_only=True)
    weights = [v for v in ckpt["state_dict"].values() if v.is_floating_point()]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights)


def test_resume_drops_log_rows_after_the_checkpoint(data_dir, tmp_path):
    loop.train(_cfg(data_dir), tmp_path, max_steps=4, stop_at_step=2, progress=False)
    # As if killed after step 3 was logged but before it was saved: latest.pt is step 2's.
    steps_csv = tmp_path / "steps.csv"
    header = steps_csv.read_text().splitlines()[0].split(",")
    fake = ",".join("3" if key == "step" else "-1" for key in header)
    steps_csv.write_text(steps_csv.read_text() + fake + "\n")
    loop.train(None, tmp_path, resume=True, progress=False)
    rows = _rows(steps_csv)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(float(r["loss"]) > 0 for r in rows)  # the fake row is gone


def test_resume_with_another_process_count_keeps_the_epoch_share(tmp_path):
    import logging
    from types import SimpleNamespace

    from mbsnet.train.state import Progress

    messages = []
    logger = logging.getLogger("test.world")
    logger.warning = messages.append  # type: ignore[method-assign]
    run = SimpleNamespace(
        progress=Progress(epoch=3, batch=6, world_size=4),
        cfg=SimpleNamespace(train=SimpleNamespace(grad_accum=4)), logger=logger,
    )  # fmt: skip
    loop._adapt_to_world_size(run)  # 4 processes x 6 micro-batches = 24 = 1 process x 24
    assert run.progress.batch == 24 and run.progress.world_size == 1
    assert "resumed with 1 process(es), saved with 4" in messages[0]
    run.progress.batch, run.progress.world_size = 7, 1
    loop._adapt_to_world_size(run)  # the same count: untouched, silent
    assert run.progress.batch == 7 and len(messages) == 1


@pytest.mark.parametrize("every", [2, 0])  # a step-based validation, or the epoch-end one
def test_sigterm_during_validation_saves_and_the_resume_redoes_it(
    data_dir, tmp_path, monkeypatch, every
):
    import signal

    cfg = _cfg(data_dir).apply_overrides([f"validation.every_steps={every}"])
    loop.train(cfg, tmp_path / "full", max_steps=4, progress=False)
    real, calls = loop.validate, []

    def signal_then_validate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first validation of the model (call 1: the noisy baseline)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "validate", signal_then_validate)
    loop.train(cfg, tmp_path / "cut", max_steps=4, progress=False)
    log = (tmp_path / "cut/train.log").read_text()
    assert "stop requested (SIGTERM) during validation" in log
    assert not (tmp_path / "cut/checkpoints/best.pt").exists()
    monkeypatch.setattr(loop, "validate", real)
    loop.train(None, tmp_path / "cut", resume=True, progress=False)
    _assert_same_final_state(tmp_path / "full", tmp_path / "cut")
    cut, full = (_results(tmp_path / run / "validations.csv") for run in ("cut", "full"))
    assert cut == full


def test_a_dead_pesq_pool_skips_that_step_and_training_goes_on(data_dir, tmp_path):
    from mbsnet.scoring_pool import ScoringPoolError

    class DyingPool(_StubPool):
        calls = 0

        def result(self, size):
            DyingPool.calls += 1
            if DyingPool.calls == 2:
                raise ScoringPoolError("a PESQ worker process died (test)")
            return super().result(size)

    cfg = _cfg(data_dir, disc=True)
    progress = loop.train(
        cfg, tmp_path, max_steps=3, progress=False, pool_factory=lambda workers: DyingPool(set())
    )
    assert progress.step == 3 and progress.disc_steps_skipped == 1
    rows = _rows(tmp_path / "steps.csv")
    assert [r["disc_loss"] == "" for r in rows] == [False, True, False]
    assert [float(r["pesq_fail_rate"]) for r in rows] == [0.0, 1.0, 0.0]
    assert "step 2: a PESQ worker process died (test)" in (tmp_path / "train.log").read_text()


def test_tensorboard_events_hold_the_logged_scalars(data_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    loop.train(_cfg(data_dir), tmp_path, max_steps=3, progress=False)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/grad_norm", "valid/valid_pesq", "epoch/train_loss"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]


def test_a_causal_model_trains_and_its_checkpoint_streams(data_dir, tmp_path):
    """The causal branch of the training step (no segment scale) and compile=false/true alike."""
    from mbsnet.checkpoint import model_from_checkpoint
    from mbsnet.stream import Streamer

    cfg = _cfg(data_dir, disc=True).apply_overrides(['model.preset="tiny-causal"'])
    progress = loop.train(cfg, tmp_path, max_steps=2, progress=False)
    assert progress.step == 2 and progress.nonfinite_total == 0
    model = model_from_checkpoint(tmp_path / "checkpoints/latest.pt").eval()
    assert model.causal
    wave = torch.randn(1, 3000).numpy() * 0.1
    streamer = Streamer(model)
    streamed = np.concatenate([streamer.push(wave[0]), streamer.flush()])
    with torch.no_grad():
        offline = model(torch.from_numpy(wave))[0].numpy()
    assert np.abs(streamed - offline).max() <= 1e-5 * max(np.abs(offline).max(), 1e-3)
