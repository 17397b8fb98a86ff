"""checkpoint.py: plain-dict round trips, and one-line errors for every bad checkpoint."""

from __future__ import annotations

import zipfile

import pytest
import torch

import mbsnet
from mbsnet.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from mbsnet.models import create_model, preset_config


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("mbsnet", preset_config("tiny")).eval()


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, tiny, extra={"step": 123, "metrics": {"pesq": 2.5}})
    return path


def assert_one_line(err: Exception, path, *words: str) -> None:
    text = str(err)
    assert "\n" not in text and text.startswith(f"{path}: "), text
    for word in words:
        assert word in text, text


def resave(tmp_path, saved, **changes):
    """A copy of the saved checkpoint with some top-level entries changed (None deletes)."""
    ckpt = torch.load(saved, weights_only=True)
    for key, value in changes.items():
        if value is None:
            del ckpt[key]
        else:
            ckpt[key] = value
    path = tmp_path / "changed.pt"
    torch.save(ckpt, path)
    return path


# --- round trip ------------------------------------------------------------------------


def test_file_is_a_plain_dict_loadable_weights_only(saved, tiny):
    ckpt = torch.load(saved, weights_only=True)
    assert ckpt["format"] == FORMAT and ckpt["format_version"] == FORMAT_VERSION
    assert ckpt["arch"] == tiny.ARCH and ckpt["mbsnet_version"] == mbsnet.__version__
    assert isinstance(ckpt["config"], dict) and ckpt["extra"] == {
        "step": 123,
        "metrics": {"pesq": 2.5},
    }
    assert set(ckpt["state_dict"]) == set(tiny.state_dict())


def test_round_trip_gives_identical_outputs(saved, tiny):
    loaded = model_from_checkpoint(saved)
    assert not loaded.training and type(loaded) is type(tiny)
    wave = 0.1 * torch.randn(2, 8000)
    with torch.inference_mode():
        assert torch.equal(tiny(wave), loaded(wave))


def test_model_from_an_already_loaded_dict(saved):
    ckpt = load_checkpoint(saved)
    model = model_from_checkpoint(ckpt)
    assert not model.training


def test_no_extra_key_without_extra(tmp_path, tiny):
    save_checkpoint(tmp_path / "plain.pt", tiny)
    assert "extra" not in torch.load(tmp_path / "plain.pt", weights_only=True)


def test_failed_save_keeps_previous_checkpoint(tmp_path, tiny, saved):
    path = tmp_path / "run.pt"
    path.write_bytes(saved.read_bytes())
    with pytest.raises(Exception):  # noqa: B017 - a lambda cannot be pickled; the type is torch's
        save_checkpoint(path, tiny, extra={"bad": lambda: None})
    assert path.read_bytes() == saved.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]


# --- refusals -------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError) as exc:
        model_from_checkpoint(path)
    assert_one_line(exc.value, path, "not found")


@pytest.mark.parametrize("kind", ["random", "empty", "truncated", "text"])
def test_corrupt_files(tmp_path, saved, kind):
    path = tmp_path / "bad.pt"
    data = {
        "random": bytes(range(256)) * 40,
        "empty": b"",
        "truncated": saved.read_bytes()[: saved.stat().st_size // 2],
        "text": b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 42\n",
    }[kind]
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert_one_line(exc.value, path, "not a readable checkpoint (")


class Payload:
    """Stands for any pickled class: loading it would mean running arbitrary code."""


def test_pickled_objects_are_refused_not_executed(tmp_path):
    # weights_only=True refuses arbitrary classes; the error is still one line.
    path = tmp_path / "pickled.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert_one_line(exc.value, path, "not a readable checkpoint")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("raw_state_dict", "not an mbsnet checkpoint (keys: "),
        ({"model": {}, "optimizer": {}, "epoch": 3}, "keys: model, optimizer, epoch"),
        (torch.zeros(3), "not an mbsnet checkpoint (holds a Tensor)"),
        ({"format": "other-project", "state_dict": {}}, "not an mbsnet checkpoint"),
    ],
)
def test_foreign_checkpoints(tmp_path, tiny, content, words):
    path = tmp_path / "foreign.pt"
    torch.save(tiny.state_dict() if content == "raw_state_dict" else content, path)
    with pytest.raises(CheckpointError) as exc:
        model_from_checkpoint(path)
    assert_one_line(exc.value, path, words)
    assert len(str(exc.value)) < 300  # a raw state dict has many keys: only a few are shown


def test_newer_format_version(tmp_path, saved):
    path = resave(tmp_path, saved, format_version=FORMAT_VERSION + 1, mbsnet_version="9.0")
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert_one_line(exc.value, path, "newer mbsnet (9.0", "upgrade mbsnet")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"state_dict": None}, "malformed checkpoint (missing state_dict)"),
        ({"format_version": "1"}, "malformed checkpoint (format_version '1')"),
        ({"config": [1, 2]}, "config is not a dict"),
        ({"arch": "no-such-arch"}, "cannot build the model (unknown architecture"),
        ({"config": {"d_model": 32, "no_such_field": 1}}, "cannot build the model"),
    ],
)
def test_malformed_checkpoints(tmp_path, saved, changes, words):
    path = resave(tmp_path, saved, **changes)
    with pytest.raises(CheckpointError) as exc:
        model_from_checkpoint(path)
    assert_one_line(exc.value, path, words)


def test_weights_that_do_not_fit(tmp_path, saved):
    state = dict(torch.load(saved, weights_only=True)["state_dict"])
    first, second = list(state)[:2]
    del state[first]
    state["surplus.weight"] = torch.zeros(1)
    state[second] = torch.zeros(7, 7)
    path = resave(tmp_path, saved, state_dict=state)
    with pytest.raises(CheckpointError) as exc:
        model_from_checkpoint(path)
    assert_one_line(
        exc.value,
        path,
        f"missing keys: {first}",
        "unexpected keys: surplus.weight",
        f"shape mismatch (checkpoint vs model): {second} (7, 7)",
    )


def test_checkpoint_is_a_zip_file(saved):
    # torch's own container: inspectable with standard tools, no custom format to trust.
    assert zipfile.is_zipfile(saved)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_unavailable_cuda_is_not_blamed_on_the_file(saved):
    with pytest.raises(ValueError, match="CUDA was requested"):
        model_from_checkpoint(saved, map_location="cuda")
