"""The command line: help, version, info (table and JSON), and no stub commands."""

import json

import pytest
from click.testing import CliRunner

from mbsnet import __version__
from mbsnet.cli import main
from mbsnet.models import count_parameters, create_model, preset_config


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_help_lists_only_built_commands():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("enhance", "eval", "export", "info", "train"):
        assert command in result.output
    for unbuilt in ("serve", "stream"):
        assert run(unbuilt).exit_code != 0


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_info_json_matches_model():
    result = run("info", "--preset", "tiny", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    model = create_model("mbsnet", preset_config("tiny"))
    assert info["total_parameters"] == count_parameters(model)
    assert sum(info["parameters"].values()) == info["total_parameters"]
    assert set(info["parameters"]) == {"band_split", "encoder", "decoder"}
    assert info["macs_per_second"] > 0


def test_info_table_of_the_base_preset():
    result = run("info", "--preset", "base")
    assert result.exit_code == 0, result.output
    total = count_parameters(create_model("mbsnet", preset_config("base")))
    assert "preset base" in result.output
    assert f"{total:,}" in result.output


def test_info_bsrnn_and_bad_preset():
    assert run("info", "--arch", "bsrnn").exit_code == 0
    result = run("info", "--preset", "huge")
    assert result.exit_code != 0 and "unknown preset" in result.output


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_info_bad_checkpoint_is_one_line(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    result = run("info", str(path))
    assert result.exit_code != 0
    message = result.output.strip()
    assert "\n" not in message and str(path) in message
