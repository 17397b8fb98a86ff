"""Record a model as one ONNX graph, waveform to waveform, with dynamic batch and length.

Exporter, chosen by measurement on this code base (tiny MBS-Net and BSRNN, torch 2.13): the
TorchScript exporter (``dynamo=False``) exported in ~4 s and its graph matched PyTorch at
(1, 16000), (2, 12345), (1, 600), (1, 512) and (1, 176077) to ~120 dB SNR; the dynamo exporter
(``Dim.DYNAMIC`` batch and length, opset 18) took 26 s, its graph failed in onnxruntime at
batch 2 for both architectures (an Add broadcasting 97 by 194 frames), and it ran 3x slower
at 11 s (1.13 s vs 0.39 s, tiny MBS-Net, one run). It is also known on this machine to write
opset 18 when asked for 17 (../shared/FACTS.md); `record_graph` checks the opset written.
"""

from __future__ import annotations

import dataclasses
import io
import json
import warnings
from typing import Any

import torch
from torch import nn

import mbsnet
from mbsnet import SAMPLE_RATE
from mbsnet.enhance.chunking import frame_hop
from mbsnet.enhance.torch_backend import ReferencedModel
from mbsnet.export.common import DEFAULT_OPSET, ExportError
from mbsnet.export.graph_passes import split_projections
from mbsnet.export.runtime import INPUT_NAMES, OUTPUT_NAME
from mbsnet.models import count_parameters

EXPORTER = "torch.onnx.export(dynamo=False)"
CAUSAL_INPUTS_DOC = (
    "wave (batch, samples) float32 16 kHz; a causal model sets its gain from its own running "
    "level, so there is no reference input"
)
INPUTS_DOC = (
    "wave (batch, samples) float32 16 kHz; reference (batch, ref_samples) float32: the signal "
    "whose level sets the gain (wave itself, or the whole file when wave is a chunk of it)"
)
_DYNAMIC_AXES = {
    "wave": {0: "batch", 1: "samples"},
    "reference": {0: "batch", 1: "ref_samples"},
    OUTPUT_NAME: {0: "batch", 1: "samples"},
}


def first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]


def graph_opset(proto: Any) -> int:
    """The default-domain opset a graph declares."""
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def record_graph(model: nn.Module, opset: int = DEFAULT_OPSET) -> Any:
    """Trace `model` into an `onnx.ModelProto` (float32) with dynamic batch and length, with
    `split_projections` applied (the streaming step is left as traced: there it measured no
    faster).

    Raises:
        ExportError: the exporter fails (e.g. an opset it cannot honour), or writes another
            opset than the one asked for.
    """
    import onnx

    graph = ReferencedModel(model).eval()
    # The traced length does not matter (all sizes stay symbolic); tests check several.
    example = 0.1 * torch.randn(1, SAMPLE_RATE, generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            # The TorchScript exporter is deprecated upstream and says so on every call.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph, (example, example), buffer, dynamo=False, opset_version=opset,
                input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                dynamic_axes=_DYNAMIC_AXES,
            )
    except Exception as err:  # torch raises RuntimeError, SymbolicValueError, ... here
        raise ExportError(f"cannot export at opset {opset}: {first_line(err)}") from err
    proto = onnx.load_from_string(buffer.getvalue())
    written = graph_opset(proto)
    if written != opset:
        raise ExportError(f"asked for opset {opset}, but the exporter wrote opset {written}")
    split_projections(proto)
    return proto


def graph_metadata(model: nn.Module, checkpoint_sha256: str, precision: str) -> dict[str, str]:
    """metadata_props of an exported graph: everything a runtime needs to know, computed."""
    return {
        "producer": "mbsnet",
        "mbsnet_version": mbsnet.__version__,
        "arch": str(getattr(model, "ARCH", type(model).__name__)),
        "config": json.dumps(dataclasses.asdict(model.config), sort_keys=True),
        "sample_rate": str(SAMPLE_RATE),
        "hop": str(frame_hop(model)),
        "min_samples": str(int(model.min_samples)),
        "parameters": str(count_parameters(model)),
        "checkpoint_sha256": checkpoint_sha256,
        "precision": precision,
        "exporter": f"{EXPORTER}, torch {torch.__version__}",
        "inputs": CAUSAL_INPUTS_DOC if getattr(model, "causal", False) else INPUTS_DOC,
    }


def finish_graph(proto: Any, metadata: dict[str, str]) -> Any:
    """Attach `metadata` as metadata_props and run `onnx.checker.check_model`.

    Raises:
        ExportError: the checker rejects the graph.
    """
    import onnx

    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, metadata)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"onnx.checker rejects the graph: {first_line(err)}") from err
    return proto
