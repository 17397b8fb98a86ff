"""mbsnet export and ONNX inference: parity, metadata, providers, CLI paths, failure messages."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from mbsnet.checkpoint import save_checkpoint
from mbsnet.cli import main
from mbsnet.enhance.torch_backend import TorchBackend
from mbsnet.eval.metrics import snr_db
from mbsnet.export import build
from mbsnet.export.build import BUNDLED_EXAMPLE, export_checkpoint
from mbsnet.export.common import MIN_SNR_DB
from mbsnet.models import count_parameters, create_model, preset_config
from mbsnet.tracing import is_exporting

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from mbsnet.export.runtime import CPU, CUDA, OnnxBackend, RuntimeSetupError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SR = 16000


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("mbsnet", preset_config("tiny")).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(checkpoint, onnx path, summary, model) of the tiny preset, random weights, checked."""
    folder = tmp_path_factory.mktemp("export")
    model = _tiny()
    ckpt = folder / "tiny.pt"
    save_checkpoint(ckpt, model)
    summary = export_checkpoint(ckpt, folder / "tiny.onnx")
    return ckpt, folder / "tiny.onnx", summary, model


def test_parity_at_the_check_lengths_and_batch(exported):
    _, _, summary, model = exported
    shapes = [r.shape for r in summary.parity]
    assert any(n < SR for _, n in shapes)  # under 1 s
    assert any(n % model.stft.hop for _, n in shapes)  # not whole hops
    assert any(n > 10 * SR for _, n in shapes)  # over 10 s
    assert any(b == 2 for b, _ in shapes)
    for result in summary.parity:
        print(f"{result.label} {result.shape}: {result.snr_db:.1f} dB")
        assert result.snr_db >= MIN_SNR_DB


@pytest.mark.parametrize("shape", [(3, 512), (1, SR + 1), (2, 777), (4, SR // 2 + 64)])
def test_parity_at_other_shapes_and_a_reference_longer_than_the_input(exported, shape):
    _, path, _, model = exported
    onnx_backend, torch_backend = OnnxBackend(path, device="cpu"), TorchBackend(model, "cpu")
    gen = np.random.default_rng(sum(shape))
    wave = (0.1 * gen.standard_normal(shape)).astype(np.float32)
    reference = np.concatenate([wave, 3 * wave], axis=1)  # a chunk of a louder whole
    for ref in (wave, reference):
        assert snr_db(torch_backend(wave, ref), onnx_backend(wave, ref)) >= MIN_SNR_DB


def test_metadata_is_computed_and_the_graph_checks(exported):
    ckpt, path, _, model = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["arch"] == "mbsnet" and meta["precision"] == "float32"
    assert json.loads(meta["config"]) == dataclasses.asdict(model.config)
    assert int(meta["parameters"]) == count_parameters(model)
    assert meta["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert int(meta["hop"]) == model.stft.hop and int(meta["min_samples"]) == model.min_samples
    assert int(meta["sample_rate"]) == SR and meta["mbsnet_version"]
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in proto.graph.input]
    assert all(isinstance(d, str) for dim in dims for d in dim)  # batch and length symbolic


def test_provider_report_on_this_machine(exported):
    _, path, _, _ = exported
    assert OnnxBackend(path, device="cpu").provider == CPU
    auto = OnnxBackend(path, device="auto")
    assert auto.provider == auto.session.get_providers()[0]
    if auto.provider == CPU and CUDA in ort.get_available_providers():
        assert auto.note.startswith("CUDA provider did not load")
    if auto.provider != CUDA:
        with pytest.raises(RuntimeSetupError, match="--device cuda") as err:
            OnnxBackend(path, device="cuda")
        assert "\n" not in str(err.value)


def _float_copy(src: Path, dest: Path, rate: int = SR, channels: int = 1) -> Path:
    """The example as float WAV (no quantization in the comparison), resampled/stacked."""
    from mbsnet.audio import read_audio, resample

    x, info = read_audio(src)
    x = resample(x, info.samplerate, rate)
    x = np.concatenate([x, 0.5 * x[:, ::-1]])[:channels] if channels > 1 else x
    sf.write(dest, x.T, rate, subtype="FLOAT")
    return dest


@pytest.mark.parametrize(
    ("rate", "channels", "chunk"), [(SR, 1, None), (22050, 2, 2.0)], ids=["whole", "chunked"]
)
def test_enhance_onnx_matches_pytorch_and_the_standalone_example(
    exported, tmp_path, rate, channels, chunk
):
    ckpt, path, _, _ = exported
    noisy = _float_copy(BUNDLED_EXAMPLE, tmp_path / "noisy.wav", rate, channels)
    extra = ["--chunk-seconds", chunk] if chunk else []
    outs, logs = {}, {}
    for flag, model in (("--onnx", path), ("--checkpoint", ckpt)):
        outs[flag] = tmp_path / f"{flag.strip('-')}.wav"
        result = run("enhance", noisy, "-o", outs[flag], flag, model, "--device", "cpu",
                     "--threads", 1, "--quiet", *extra)
        assert result.exit_code == 0, result.output
        logs[flag] = result.stderr
    assert f"onnxruntime runs {path} on {CPU}" in logs["--onnx"]
    onnx_out, torch_out = (sf.read(outs[k], always_2d=True)[0] for k in ("--onnx", "--checkpoint"))
    assert onnx_out.shape == torch_out.shape == sf.read(noisy, always_2d=True)[0].shape
    for ch in range(channels):
        assert snr_db(torch_out[:, ch], onnx_out[:, ch]) >= MIN_SNR_DB
    if rate == SR and chunk is None:  # the standalone script: whole 16 kHz files
        standalone = tmp_path / "standalone.wav"
        script = REPO / "examples" / "onnx_enhance.py"
        subprocess.run([sys.executable, script, path, noisy, standalone], check=True)
        # same graph and input; only onnxruntime's thread count differs (reduction order)
        np.testing.assert_allclose(sf.read(standalone, always_2d=True)[0], onnx_out, atol=1e-6)


def test_eval_onnx_matches_pytorch_per_file(exported, shared_data, tmp_path):
    from vbd_files import copy_pairs

    ckpt, path, _, _ = exported
    test_dir = copy_pairs(shared_data, tmp_path, ("p232_052", "p232_170", "p257_054"))
    pesq = {}
    for flag, model in (("--onnx", path), ("--checkpoint", ckpt)):
        out = tmp_path / flag.strip("-")
        result = run("eval", "--test-dir", test_dir, flag, model, "--out", out,
                     "--workers", 0, "--device", "cpu", "--quiet")
        assert result.exit_code == 0, result.output
        pesq[flag] = json.loads((out / "summary.json").read_text())["mean"]["pesq"]
        per_file = (out / "per_file.csv").read_text().splitlines()
        assert per_file[0].split(",")[2] == "pesq"
        pesq[flag, "files"] = [line.split(",")[2] for line in per_file[1:]]
    assert abs(pesq["--onnx"] - pesq["--checkpoint"]) <= 0.005
    for a, b in zip(pesq["--onnx", "files"], pesq["--checkpoint", "files"], strict=True):
        assert abs(float(a) - float(b)) <= 0.02


_NO_TORCH = """
import sys
from mbsnet.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    print("torch imported" if "torch" in sys.modules else "no torch")
"""


def _cli_in_fresh_process(*args: object) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.run([sys.executable, "-c", _NO_TORCH, *map(str, args)], env=env,
                          capture_output=True, text=True, check=True)


def test_onnx_and_enhanced_dir_paths_never_import_torch(exported, tmp_path):
    _, path, _, _ = exported
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    sf.write(noisy / "a.wav", sf.read(BUNDLED_EXAMPLE)[0][: 2 * SR], SR)
    done = _cli_in_fresh_process("enhance", noisy, "-o", tmp_path / "enhanced", "--onnx", path,
                                 "--quiet")
    assert done.stdout.strip() == "no torch", done.stderr
    assert (tmp_path / "enhanced" / "a.wav").is_file()
    for source in (["--onnx", path], ["--enhanced-dir", tmp_path / "enhanced"]):
        done = _cli_in_fresh_process("eval", "--noisy-dir", noisy, "--clean-dir", noisy,
                                     *source, "--out", tmp_path / "report", "--workers", 0,
                                     "--quiet")
        assert done.stdout.strip().endswith("no torch"), done.stderr


def _one_line_error(result) -> str:
    """The error line; the command may have logged progress lines before it."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert errors == lines[-1:], result.output
    return errors[0]


def test_bad_checkpoint_unwritable_output_and_opset_are_one_line_errors(exported, tmp_path):
    ckpt, _, _, _ = exported
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    out = tmp_path / "m.onnx"
    assert "not a readable checkpoint" in _one_line_error(run("export", junk, "-o", out))
    missing = tmp_path / "no" / "m.onnx"
    assert "does not exist" in _one_line_error(run("export", ckpt, "-o", missing))
    assert "is a directory" in _one_line_error(run("export", ckpt, "-o", tmp_path))
    line = _one_line_error(run("export", ckpt, "-o", out, "--opset", 99, "--no-check"))
    assert "opset 99" in line
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


def test_a_failed_parity_check_keeps_the_users_file(exported, tmp_path, monkeypatch):
    ckpt, _, _, _ = exported
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the user's earlier export")
    real = build.record_graph
    torch.manual_seed(1)
    other = create_model("mbsnet", preset_config("tiny")).eval()  # other weights: no parity
    monkeypatch.setattr(build, "record_graph", lambda model, opset: real(other, opset))
    line = _one_line_error(run("export", ckpt, "-o", out))
    assert "parity check failed" in line and "nothing written" in line
    assert out.read_bytes() == b"the user's earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_onnx_backend_refuses_a_foreign_graph(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, tmp_path / "foreign.onnx")
    with pytest.raises(RuntimeSetupError, match="not a graph written by mbsnet export"):
        OnnxBackend(tmp_path / "foreign.onnx", device="cpu")
    (tmp_path / "broken.onnx").write_bytes(b"junk")
    with pytest.raises(RuntimeSetupError, match="not a loadable ONNX graph"):
        OnnxBackend(tmp_path / "broken.onnx", device="cpu")


def test_fp16_graph_keeps_float32_io_and_reports_snr_and_pesq(exported, tmp_path):
    ckpt, _, _, _ = exported
    out = tmp_path / "tiny16.onnx"
    result = run("export", ckpt, "-o", out, "--fp16")
    assert result.exit_code == 0, result.output
    assert "PESQ on the example" in result.stderr and "dB" in result.stderr
    session = ort.InferenceSession(str(out), providers=[CPU])
    assert session.get_modelmeta().custom_metadata_map["precision"] == "float16"
    assert [i.type for i in session.get_inputs()] == ["tensor(float)"] * 2
    assert session.get_outputs()[0].type == "tensor(float)"
    proto = onnx.load(str(out))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)


def test_fp16_sort_puts_nodes_in_topological_order_keeping_ties():
    from onnx import helper

    from mbsnet.export.fp16 import sort_topology

    def node(op, inputs, output):
        return helper.make_node(op, inputs, [output], name=output)

    # Out of order: "c" needs "b", which needs "a"; "d" needs only the graph input.
    nodes = [node("Relu", ["b"], "c"), node("Relu", ["x"], "d"), node("Relu", ["a"], "b"),
             node("Relu", ["x"], "a"), node("Add", ["c", "d"], "y")]  # fmt: skip
    info = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "g", [info("x", onnx.TensorProto.FLOAT, [1])],
                              [info("y", onnx.TensorProto.FLOAT, [1])])  # fmt: skip
    sort_topology(graph)
    assert [n.name for n in graph.node] == ["d", "a", "b", "c", "y"]
    onnx.checker.check_model(helper.make_model(graph))


def test_bsrnn_exports_with_parity(tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "bsrnn.pt"
    save_checkpoint(ckpt, create_model("bsrnn", {"d_model": 16, "n_layers": 2}))
    summary = export_checkpoint(ckpt, tmp_path / "bsrnn.onnx")
    assert summary.metadata["arch"] == "bsrnn"
    assert min(r.snr_db for r in summary.parity) >= MIN_SNR_DB


def test_is_exporting_holds_under_the_dynamo_tracer_too():
    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1 if is_exporting() else x

    x = torch.zeros(2)
    assert not is_exporting()
    assert torch.equal(torch.export.export(Probe(), (x,)).module()(x), x + 1)


def test_export_without_example_needs_check_off(exported, tmp_path):
    ckpt, _, _, _ = exported
    line = _one_line_error(run("export", ckpt, "-o", tmp_path / "m.onnx",
                               "--example", tmp_path / "missing.wav"))
    assert "missing.wav: file not found" in line and "--no-check" in line


def test_is_exporting_stays_false_under_torch_compile():
    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1 if is_exporting() else x

    x = torch.zeros(2)
    assert torch.equal(torch.compile(Probe(), backend="eager")(x), x)  # training keeps its path
