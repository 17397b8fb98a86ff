"""Fine-tuning (`--init`), the noisy-input baseline of validation, and the fast-step switches."""

from __future__ import annotations

import csv

import pytest
import torch
from test_train_loop import _cfg, _train_cli, data_dir  # noqa: F401  (fixture)

from mbsnet.checkpoint import save_checkpoint
from mbsnet.models import create_model, preset_config, set_memory_saving
from mbsnet.train import loop
from mbsnet.train.init_weights import InitError


def _validations(run_dir):
    with open(run_dir / "validations.csv", newline="") as f:
        return list(csv.DictReader(f))


def _tiny_checkpoint(path, seed=3):
    torch.manual_seed(seed)
    model = create_model("mbsnet", preset_config("tiny"))
    save_checkpoint(path, model)
    return model


def test_init_starts_from_the_weights_with_a_fresh_schedule(data_dir, tmp_path):  # noqa: F811
    source = _tiny_checkpoint(tmp_path / "source.pt")
    cfg = _cfg(data_dir).apply_overrides([f'model.init="{tmp_path / "source.pt"}"'])
    loop.train(cfg, tmp_path / "run", max_steps=1, stop_at_step=1, progress=False)
    ckpt = torch.load(tmp_path / "run/checkpoints/latest.pt", weights_only=True)
    assert ckpt["extra"]["train"]["progress"]["step"] == 1  # counted from 0, not continued
    moved = [k for k, v in source.state_dict().items() if not torch.equal(v, ckpt["state_dict"][k])]
    assert moved  # one step of training changed the weights ...
    delta = max((source.state_dict()[k] - ckpt["state_dict"][k]).abs().max() for k in moved)
    assert delta < 1e-2  # ... by one small step from the source, not from a fresh init
    log = (tmp_path / "run/train.log").read_text()
    assert f"initialised from weights from {tmp_path / 'source.pt'}" in log
    assert ckpt["arch"] == "mbsnet" and ckpt["config"]["d_model"] == source.config.d_model


def test_init_refuses_a_config_that_asks_for_another_model(data_dir, tmp_path):  # noqa: F811
    _tiny_checkpoint(tmp_path / "source.pt")
    cfg = _cfg(data_dir).apply_overrides(
        ["model.params={d_model = 48}", f'model.init="{tmp_path / "source.pt"}"']
    )
    with pytest.raises(InitError, match=r"holds a mbsnet model.*d_model.*drop the model settings"):
        loop.train(cfg, tmp_path / "run", max_steps=1, progress=False)


def test_init_errors_are_one_line_cli_errors(data_dir, tmp_path):  # noqa: F811
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    result = _train_cli(
        "--data-dir", str(data_dir), "--run-dir", str(tmp_path / "run"), "--init",
        str(tmp_path / "junk.pt"), "--set", 'model.preset="tiny"',
    )  # fmt: skip
    assert result.exit_code == 1
    assert "--init" in result.output and "not a readable checkpoint" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_validation_logs_the_noisy_input_once(data_dir, tmp_path):  # noqa: F811
    loop.train(_cfg(data_dir), tmp_path / "run", max_steps=2, stop_at_step=1, progress=False)
    loop.train(None, tmp_path / "run", resume=True, progress=False)
    log = (tmp_path / "run/train.log").read_text()
    assert log.count("validation items as they come (noisy input)") == 1
    (row,) = _validations(tmp_path / "run")
    noisy = float(row["noisy_pesq"])
    assert 1.0 <= noisy <= 4.6
    assert f"over the noisy input's {noisy:.3f}" in log


def test_fast_step_switches_leave_the_gradients_unchanged():
    torch.manual_seed(0)
    model = create_model("mbsnet", preset_config("tiny"))
    wave = torch.randn(2, 8000)
    grads = []
    for recompute in (True, False):
        set_memory_saving(model, checkpoint_blocks=False, recompute_mamba=recompute)
        model.zero_grad()
        model(wave).pow(2).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_resume_may_change_paths_and_workers_but_not_the_recipe(data_dir, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    loop.train(_cfg(data_dir), run, max_steps=3, stop_at_step=1, progress=False)
    moved = tmp_path / "moved"
    moved.symlink_to(data_dir, target_is_directory=True)  # the data at another path
    with pytest.raises(loop.ConfigError, match=r"optim.lr cannot change on --resume"):
        loop.train(None, run, resume=True, overrides=["optim.lr=1e-3"], progress=False)
    overrides = [f'data.data_dir="{moved}"', "train.log_every_steps=7"]
    loop.train(None, run, resume=True, overrides=overrides, progress=False)
    log = (run / "train.log").read_text()
    assert f"resume override data.data_dir: '{data_dir}' -> '{moved}'" in log
    assert "resume override train.log_every_steps: 1 -> 7" in log
    ckpt = torch.load(run / "checkpoints/latest.pt", weights_only=True)
    assert ckpt["extra"]["train"]["config"]["data"]["data_dir"] == str(moved)
    # Same result as a run that never moved:
    loop.train(_cfg(data_dir), tmp_path / "straight", max_steps=3, progress=False)
    straight = torch.load(tmp_path / "straight/checkpoints/latest.pt", weights_only=True)
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, ckpt["state_dict"][key]), key


def test_cli_resume_takes_safe_set_options(data_dir, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    loop.train(_cfg(data_dir), run, max_steps=2, stop_at_step=1, progress=False)
    bad = _train_cli("--resume", str(run), "--set", "train.batch_size=3")
    assert bad.exit_code == 1 and "train.batch_size cannot change on --resume" in bad.output
    good = _train_cli("--resume", str(run), "--set", "train.num_workers=0")
    assert good.exit_code == 0, good.output


def test_damaged_latest_names_the_newest_intact_checkpoint(data_dir, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    loop.train(_cfg(data_dir), run, max_steps=5, stop_at_step=4, progress=False)
    (run / "checkpoints/latest.pt").write_bytes(b"\0" * 100)  # a crash mid-copy, a full disk
    with pytest.raises(loop.TrainingError) as caught:
        loop.train(None, run, resume=True, progress=False)
    message = str(caught.value)
    assert "latest.pt" in message and "not a readable checkpoint" in message
    assert "newest intact checkpoint of this run is epoch_0000.pt (step 3" in message
    assert f"--resume {run} --resume-from epoch_0000.pt" in message
    loop.train(None, run, resume=True, resume_from="epoch_0000.pt", progress=False)
    loop.train(_cfg(data_dir), tmp_path / "straight", max_steps=5, progress=False)
    a, b = (torch.load(r / "checkpoints/latest.pt", weights_only=True)
            for r in (run, tmp_path / "straight"))  # fmt: skip
    assert a["extra"]["train"]["progress"]["step"] == 5
    for key, value in b["state_dict"].items():
        assert torch.equal(value, a["state_dict"][key]), key


def test_each_rank_resumes_its_own_random_streams(tmp_path, monkeypatch):
    """Under DDP every rank's RNG state is saved; a resume restores rank k's to rank k."""
    from mbsnet import distrib
    from mbsnet.train import state

    model = create_model("mbsnet", preset_config("tiny"))
    optimizer = torch.optim.AdamW(model.parameters())
    states = []
    for seed in (10, 11):  # what ranks 0 and 1 hold at the save
        torch.manual_seed(seed)
        states.append(state.rng_state())
    path = tmp_path / "latest.pt"
    state.save_train_state(path, model, optimizer, state.Progress(), {}, rank_rngs=states)
    ckpt = state.read_train_state(path)
    want = {}
    for rank, seed in ((0, 10), (1, 11)):
        torch.manual_seed(seed)
        want[rank] = torch.rand(3)
    monkeypatch.setattr(distrib, "world_size", lambda: 2)
    for rank in (1, 0):
        monkeypatch.setattr(distrib, "rank", lambda rank=rank: rank)
        torch.manual_seed(999)
        state.restore_train_state(ckpt, path, model, optimizer)
        assert torch.equal(torch.rand(3), want[rank]), rank


_LOADER_SIGNAL_SCRIPT = """
import os, signal, sys, time
import torch
from mbsnet.train.order import loader


class Items(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        time.sleep(0.2)
        return torch.zeros(4), torch.zeros(4), 4


def main():
    caught = []
    signal.signal(signal.SIGTERM, lambda *_: caught.append("TERM"))  # as the trainer's StopFlag
    batches = [[i] for i in range(8)]
    seen = 0
    for i, _ in enumerate(loader(Items(), batches, workers=2)):
        if i == 1:
            os.killpg(0, signal.SIGTERM)  # a scheduler's SIGTERM reaches every process
        seen += 1
    print(caught, seen)


if __name__ == "__main__":
    main()
"""


def test_loader_workers_survive_a_signal_to_the_whole_process_group(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "loader_signal.py"
    script.write_text(_LOADER_SIGNAL_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, start_new_session=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['TERM'] 8"


def test_init_from_a_checkpoint_older_than_a_config_field(data_dir, tmp_path):  # noqa: F811
    """The bundled default predates `causal`: --init with its preset named still works."""
    _tiny_checkpoint(tmp_path / "source.pt")
    ckpt = torch.load(tmp_path / "source.pt", weights_only=True)
    for name in ("causal", "lookahead_frames"):
        del ckpt["config"][name]
    torch.save(ckpt, tmp_path / "source.pt")
    cfg = _cfg(data_dir).apply_overrides([f'model.init="{tmp_path / "source.pt"}"'])
    assert cfg.model.preset == "tiny"  # asks for the same model, spelled as a preset
    assert loop.train(cfg, tmp_path / "run", max_steps=1, progress=False).step == 1
