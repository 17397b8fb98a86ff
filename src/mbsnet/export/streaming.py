"""Record a causal model's one-hop step (`mbsnet.stream.StreamStep`) as a stateful ONNX graph.

Inputs: `hop` (batch, hop) float32, then the states (`StreamStep.state_names`); outputs:
`enhanced` (batch, hop) and the new states `next_<name>`. The state shapes, the hop, the
delay of the output and the algorithmic latency are computed and written to metadata_props;
the initial state is zeros of those shapes. Same exporter as the offline graph
(`mbsnet.export.writer`).
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from mbsnet import SAMPLE_RATE
from mbsnet.eval.metrics import snr_db
from mbsnet.export.common import DEFAULT_OPSET, ExportError
from mbsnet.export.parity import ParityResult
from mbsnet.export.stream_runtime import HOP_INPUT, NEXT_PREFIX, OUTPUT_NAME, OnnxHopRunner
from mbsnet.export.writer import first_line, graph_metadata, graph_opset
from mbsnet.stream.step import StreamStep
from mbsnet.stream.streamer import Streamer

STREAM_CHECK_SECONDS = (0.7, 3.0)
"""Lengths (and a 2-channel batch at the second) of the streaming parity check."""


def stream_step(model: nn.Module) -> StreamStep:
    """The model's one-hop step; ExportError (one line) when the model is not causal."""
    try:
        return StreamStep(model).eval()
    except ValueError as err:
        raise ExportError(f"--streaming: {err}") from None


def record_stream_graph(model: nn.Module, opset: int = DEFAULT_OPSET) -> Any:
    """Trace the one-hop step into an `onnx.ModelProto` with a dynamic batch (channels)."""
    import onnx

    step = stream_step(model)
    state = step.initial_state(1)
    hop = 0.1 * torch.randn(1, step.hop, generator=torch.Generator().manual_seed(0))
    names = step.state_names
    outputs = [OUTPUT_NAME, *(NEXT_PREFIX + name for name in names)]
    dynamic = {name: {0: "batch"} for name in (HOP_INPUT, *names, *outputs)}
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(
                step,
                (hop, *state),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[HOP_INPUT, *names],
                output_names=outputs,
                dynamic_axes=dynamic,
            )
    except Exception as err:  # torch raises RuntimeError, SymbolicValueError, ... here
        raise ExportError(
            f"cannot export the streaming step at opset {opset}: {first_line(err)}"
        ) from err
    proto = onnx.load_from_string(buffer.getvalue())
    if graph_opset(proto) != opset:
        raise ExportError(f"asked for opset {opset}, the exporter wrote {graph_opset(proto)}")
    return proto


def stream_metadata(model: nn.Module, checkpoint_sha256: str) -> dict[str, str]:
    """metadata_props of a streaming graph: the offline ones plus states, hop and latency."""
    step = stream_step(model)
    meta = graph_metadata(model, checkpoint_sha256, "float32")
    latency = model.latency_samples
    meta.update(
        {
            "streaming": "true",
            "stream_delay": str(model.stream_delay),
            "latency_samples": str(latency),
            "latency_ms": f"{1000 * latency / SAMPLE_RATE:g}",
            "lookahead_frames": str(model.lookahead),
            "states": json.dumps(step.state_shapes("batch")),
            "initial_state": "zeros of the shapes in 'states' (batch = streams side by side)",
            "inputs": (
                f"{HOP_INPUT} (batch, {step.hop}) float32 16 kHz, then the states "
                f"{', '.join(step.state_names)}; outputs {OUTPUT_NAME} (batch, {step.hop}), "
                f"lagging the input by stream_delay samples, then "
                f"{', '.join(NEXT_PREFIX + n for n in step.state_names)}"
            ),
        }
    )
    return meta


def check_stream_graph(path: Any, model: nn.Module, example: np.ndarray) -> list[ParityResult]:
    """Stream `example` hop by hop through the graph (onnxruntime, CPU) and compare with the
    PyTorch model's offline output: one result per length, and a 2-channel batch."""
    runner = OnnxHopRunner(path, device="cpu")
    results = []
    for seconds in STREAM_CHECK_SECONDS:
        n = min(round(seconds * SAMPLE_RATE), example.size)
        cases = [(f"{n / SAMPLE_RATE:g} s", example[None, :n])]
        if seconds == STREAM_CHECK_SECONDS[-1]:
            pair = np.stack([example[:n], 0.3 * example[::-1][:n]])
            cases.append((f"{n / SAMPLE_RATE:g} s, 2 channels", pair))
        for label, wave in cases:
            with torch.no_grad():
                want = model(torch.from_numpy(np.ascontiguousarray(wave))).numpy()
            streamer = Streamer(runner, channels=wave.shape[0])
            got = np.concatenate([streamer.push(wave), streamer.flush(mono=False)], axis=1)
            results.append(ParityResult(f"streamed {label}", tuple(wave.shape), snr_db(want, got)))
    return results
