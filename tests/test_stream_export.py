"""mbsnet export --streaming: the stateful one-hop graph, its metadata, and the standalone
streaming example against the offline causal model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from mbsnet.checkpoint import save_checkpoint
from mbsnet.cli import main
from mbsnet.export.build import BUNDLED_EXAMPLE
from mbsnet.models import create_model, preset_config
from mbsnet.stream import Streamer, StreamStep
from tests.conftest import REPO_ROOT
from tests.test_stream import causal_model, snr_db

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from mbsnet.export.stream_runtime import OnnxHopRunner  # noqa: E402


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """(checkpoint, streaming graph, export output, model): tiny-causal, lookahead 1."""
    folder = tmp_path_factory.mktemp("stream")
    model = causal_model(1)
    ckpt = folder / "causal.pt"
    save_checkpoint(ckpt, model)
    graph = folder / "causal_stream.onnx"
    result = run("export", ckpt, "-o", graph, "--streaming")
    assert result.exit_code == 0, result.output
    return ckpt, graph, result.output, model


def test_export_reports_parity_and_latency(streamed):
    _, _, output, model = streamed
    lines = [line for line in output.splitlines() if "streamed" in line]
    assert len(lines) >= 3 and all(line.endswith("dB") for line in lines), output
    assert all(float(line.split(": ")[-1].split()[0]) >= 100.0 for line in lines), output
    assert f"output lags by {model.stream_delay} samples" in output
    assert "algorithmic latency 40 ms" in output  # 512 + 1 x 128 samples at 16 kHz


def test_metadata_documents_states_and_latency(streamed):
    _, graph, _, model = streamed
    proto = onnx.load(str(graph))
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    shapes = StreamStep(model).state_shapes("batch")
    assert json.loads(meta["states"]) == {k: list(v) for k, v in shapes.items()}
    assert int(meta["stream_delay"]) == model.stream_delay
    assert int(meta["latency_samples"]) == model.latency_samples
    assert meta["streaming"] == "true" and meta["lookahead_frames"] == "1"
    names = [i.name for i in proto.graph.input]
    assert names == ["hop", *shapes]
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in proto.graph.input}  # fmt: skip
    assert all(dims[name][0] == "batch" for name in names)
    assert dims["hop"][1] == model.stft.hop


def test_standalone_streaming_example_equals_the_offline_model(streamed, tmp_path):
    _, graph, _, model = streamed
    out = tmp_path / "streamed.wav"
    script = REPO_ROOT / "examples" / "onnx_stream.py"
    done = subprocess.run(
        [sys.executable, script, graph, BUNDLED_EXAMPLE, out],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert "hops: median" in done.stdout
    noisy, _ = sf.read(BUNDLED_EXAMPLE, dtype="float32")
    with torch.no_grad():
        want = model(torch.from_numpy(noisy)[None])[0].numpy()
    got, _ = sf.read(out, dtype="float32")
    assert got.shape == want.shape and snr_db(want, got) >= 100.0
    # The same through the runner the library uses.
    streamer = Streamer(OnnxHopRunner(graph, device="cpu", threads=1))
    floats = np.concatenate([streamer.push(noisy), streamer.flush()])
    assert snr_db(want, floats) >= 100.0


def test_streaming_refuses_non_causal_and_fp16(streamed, tmp_path):
    ckpt, *_ = streamed
    plain = tmp_path / "plain.pt"
    save_checkpoint(plain, create_model("mbsnet", preset_config("tiny")))
    result = run("export", plain, "-o", tmp_path / "x.onnx", "--streaming")
    assert result.exit_code == 1 and "not a causal model" in result.output.splitlines()[-1]
    result = run("export", ckpt, "-o", tmp_path / "y.onnx", "--streaming", "--fp16")
    assert result.exit_code == 1 and "--fp16 is not available" in result.output
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()


def test_offline_graph_of_a_causal_model_has_no_reference(streamed, tmp_path):
    ckpt, _, _, model = streamed
    graph = tmp_path / "causal.onnx"
    result = run("export", ckpt, "-o", graph)
    assert result.exit_code == 0, result.output
    proto = onnx.load(str(graph))
    assert [i.name for i in proto.graph.input] == ["wave"]
    inputs_doc = {p.key: p.value for p in proto.metadata_props}["inputs"]
    assert "reference" in inputs_doc and "no reference input" in inputs_doc
    out = tmp_path / "offline.wav"
    script = REPO_ROOT / "examples" / "onnx_enhance.py"
    subprocess.run([sys.executable, script, graph, BUNDLED_EXAMPLE, out], check=True)
    noisy, _ = sf.read(BUNDLED_EXAMPLE, dtype="float32")
    with torch.no_grad():
        want = model(torch.from_numpy(noisy)[None])[0].numpy()
    assert snr_db(want, sf.read(out, dtype="float32")[0]) >= 40.0  # 16-bit output file


def test_enhance_stream_equals_offline_enhance_and_reports_hop_times(streamed, tmp_path):
    ckpt, graph, _, _ = streamed
    stereo = tmp_path / "stereo.wav"
    noisy, rate = sf.read(BUNDLED_EXAMPLE, dtype="float32")
    sf.write(stereo, np.stack([noisy, 0.5 * noisy[::-1]], axis=1), rate, subtype="FLOAT")
    outs = {}
    for name, args in {
        "offline": ["--checkpoint", ckpt],
        "torch": ["--checkpoint", ckpt, "--stream"],
        "onnx": ["--onnx", graph, "--stream", "--threads", 1],
    }.items():
        outs[name] = tmp_path / f"{name}.wav"
        result = run("enhance", stereo, "-o", outs[name], "--device", "cpu", "--quiet", *args)
        assert result.exit_code == 0, result.output
        if name != "offline":
            assert "hops: median" in result.stderr and "over the real-time budget" in result.stderr
    want = sf.read(outs["offline"], dtype="float32")[0]
    for name in ("torch", "onnx"):
        got = sf.read(outs[name], dtype="float32")[0]
        assert got.shape == want.shape == (len(noisy), 2)
        assert min(snr_db(want[:, c], got[:, c]) for c in range(2)) >= 100.0, name


def test_enhance_stream_refuses_what_cannot_stream(streamed, tmp_path):
    _, graph, _, _ = streamed
    plain = tmp_path / "plain.pt"
    save_checkpoint(plain, create_model("mbsnet", preset_config("tiny")))
    out = tmp_path / "out.wav"
    result = run("enhance", BUNDLED_EXAMPLE, "-o", out, "--checkpoint", plain, "--stream")
    assert result.exit_code == 1 and "not a causal model; --stream needs one" in result.output
    result = run("enhance", BUNDLED_EXAMPLE, "-o", out, "--onnx", graph)
    assert result.exit_code == 1 and "run it with mbsnet enhance --stream" in result.output
    assert not out.exists()


def test_an_onnxruntime_failure_fails_one_file_and_the_others_go_on(streamed, tmp_path):
    from mbsnet.enhance import enhance_paths
    from mbsnet.stream.backend import StreamingBackend

    _, graph, _, _ = streamed
    runner = OnnxHopRunner(graph, device="cpu", threads=1)
    session, calls = runner.session, {"n": 0}

    class Fail(Exception):  # onnxruntime's own errors derive from Exception only
        pass

    class Flaky:  # the session, failing on one hop (the CPU runner's io_binding path)
        def io_binding(self):
            return session.io_binding()

        def run_with_iobinding(self, binding):
            calls["n"] += 1
            if calls["n"] == 900:
                raise Fail("[ONNXRuntimeError] injected")
            return session.run_with_iobinding(binding)

    runner.session = Flaky()
    folder = tmp_path / "in"
    folder.mkdir()
    noisy, rate = sf.read(BUNDLED_EXAMPLE, dtype="float32")
    for name in ("a", "b", "c"):
        sf.write(folder / f"{name}.wav", noisy, rate)
    report = enhance_paths(StreamingBackend(runner), [folder], tmp_path / "out", progress=False)
    assert [p.name for p, _ in report.failed] == ["b.wav"]  # hop 900 falls in the second file
    assert "onnxruntime: [ONNXRuntimeError] injected" in report.failed[0][1]
    assert sorted(p.name for p, _ in report.done) == ["a.wav", "c.wav"]


def test_bound_buffers_and_plain_session_runs_agree(streamed):
    """The CPU runner's io_binding state (updated in place) equals session.run on arrays."""
    from mbsnet.export.stream_runtime import BoundState

    _, graph, _, _ = streamed
    runner = OnnxHopRunner(graph, device="cpu", threads=1)
    bound = runner.initial_state(2)
    assert isinstance(bound, BoundState)
    plain = tuple(np.array(a) for a in bound.arrays)
    noisy, _ = sf.read(BUNDLED_EXAMPLE, dtype="float32")
    hops = np.stack([noisy, noisy[::-1]])[:, : 40 * runner.hop].reshape(2, 40, runner.hop)
    for t in range(hops.shape[1]):
        hop = np.ascontiguousarray(hops[:, t])
        got, same = runner(hop, bound)
        want, plain = runner(hop, plain)
        assert same is bound and isinstance(plain, tuple)
        np.testing.assert_array_equal(got, want)
    for now, expected in zip(bound.arrays, plain, strict=True):
        np.testing.assert_array_equal(now, expected)
