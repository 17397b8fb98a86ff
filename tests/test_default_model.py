"""The bundled default weights: present, model only, loadable safely, and better than noisy."""

from __future__ import annotations

from pathlib import Path

import torch
from click.testing import CliRunner

from mbsnet.checkpoint import model_from_checkpoint
from mbsnet.cli import main
from mbsnet.eval.pipeline import score_against
from mbsnet.weights import default_checkpoint, resolve_checkpoint

EXAMPLES = Path(__file__).parents[1] / "examples"
MAX_MB = 5.0


def test_bundled_weights_are_a_small_model_only_checkpoint():
    path = default_checkpoint()  # raises if the package has none
    assert path.stat().st_size < MAX_MB * 2**20
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt["extra"]) == {"trained"}  # no optimizer, discriminator or RNG state
    model_from_checkpoint(path)
    assert resolve_checkpoint("default") == path


def test_enhance_with_no_flags_improves_the_bundled_example(tmp_path):
    noisy, clean = EXAMPLES / "noisy_p232_005.wav", EXAMPLES / "clean_p232_005.wav"
    out = tmp_path / "enhanced.wav"
    result = CliRunner().invoke(main, ["enhance", str(noisy), "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"using the bundled default model ({default_checkpoint()})" in result.output
    before = score_against(clean, noisy, ("pesq", "stoi"))
    after = score_against(clean, out, ("pesq", "stoi"))
    assert after["pesq"] > before["pesq"], (before, after)


def test_info_describes_the_bundled_model():
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    assert "using the bundled default model" in result.output
    assert str(default_checkpoint()) in result.output


def test_export_defaults_to_the_bundled_model(tmp_path):
    result = CliRunner().invoke(main, ["export", "-o", str(tmp_path / "m.onnx"), "--no-check"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_bundled_causal_weights_stream_and_improve_the_bundled_example(tmp_path):
    path = default_checkpoint(causal=True)  # raises if the package has none
    assert path.stat().st_size < MAX_MB * 2**20
    assert set(torch.load(path, weights_only=True)["extra"]) == {"trained"}
    assert model_from_checkpoint(path).causal and resolve_checkpoint("default_causal") == path
    noisy, clean = EXAMPLES / "noisy_p232_005.wav", EXAMPLES / "clean_p232_005.wav"
    out = tmp_path / "streamed.wav"
    args = ["enhance", str(noisy), "-o", str(out), "--stream", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"using the bundled causal default model ({path})" in result.output
    assert "hops: median" in result.output
    before = score_against(clean, noisy, ("pesq",))
    assert score_against(clean, out, ("pesq",))["pesq"] > before["pesq"]
