"""`mbsnet export` as a library call: checkpoint -> checked ONNX file, written atomically."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import mbsnet
from mbsnet.atomic import atomic_path
from mbsnet.audio import AudioError
from mbsnet.checkpoint import CheckpointError, file_sha256, model_from_checkpoint
from mbsnet.enhance.torch_backend import TorchBackend
from mbsnet.export.common import DEFAULT_OPSET, MIN_SNR_DB, ExportError
from mbsnet.export.fp16 import to_float16
from mbsnet.export.parity import (
    PESQ_WARN,
    ParityResult,
    compare,
    load_example,
    parity_cases,
    pesq_change,
)
from mbsnet.export.runtime import OnnxBackend, RuntimeSetupError
from mbsnet.export.writer import (
    finish_graph,
    graph_metadata,
    record_graph,
)
from mbsnet.models import count_parameters

BUNDLED_EXAMPLE = Path(mbsnet.__file__).resolve().parents[2] / "examples" / "noisy_p232_005.wav"
"""The repository's example (present in a source checkout, not in a wheel)."""


@dataclass
class ExportSummary:
    """What `export_checkpoint` wrote and measured."""

    path: Path
    metadata: dict[str, str]
    size_bytes: int
    parity: list[ParityResult] = field(default_factory=list)
    pesq: tuple[float, float] | None = None
    """(PyTorch, ONNX) PESQ on the example, float16 graphs only."""
    pesq_against: str = ""
    warnings: list[str] = field(default_factory=list)


def default_checkpoint(causal: bool = False) -> Path:
    """The bundled weights CKPT defaults to (`mbsnet.weights`; causal for --streaming); an
    ExportError if absent."""
    from mbsnet.weights import default_checkpoint as bundled

    try:
        return bundled(causal)
    except FileNotFoundError as error:
        raise ExportError(str(error)) from None


def clean_companion(example: Path) -> Path | None:
    """``clean_NAME`` beside ``noisy_NAME``, if that file exists."""
    if not example.name.startswith("noisy_"):
        return None
    clean = example.with_name("clean_" + example.name.removeprefix("noisy_"))
    return clean if clean.is_file() else None


def _check_output(output: Path) -> None:
    if output.is_dir():
        raise ExportError(f"{output}: is a directory; give a file name such as model.onnx")
    folder = output.parent
    if not folder.is_dir():
        raise ExportError(f"{output}: cannot write, folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ExportError(f"{output}: cannot write, no permission in folder {folder}")


@dataclass(frozen=True)
class _Example:
    """The parity check's audio: (N,) float32 at 16 kHz, and its clean reference if any."""

    wave: np.ndarray
    clean: np.ndarray | None
    clean_name: str


def _load_example(path: Path) -> _Example:
    try:
        clean = clean_companion(path)
        return _Example(
            load_example(path),
            load_example(clean) if clean is not None else None,
            clean.name if clean is not None else "",
        )
    except AudioError as err:
        raise ExportError(f"parity example: {err} (pass --example FILE or --no-check)") from err


def _check(summary: ExportSummary, graph_path: Path, model, example: _Example,
           fp16: bool) -> None:
    """Run the graph in onnxruntime against PyTorch; raise ExportError if fp32 falls short."""
    try:
        onnx_backend = OnnxBackend(graph_path, device="cpu")
    except RuntimeSetupError as err:
        raise ExportError(f"parity check: {err}") from err
    torch_backend = TorchBackend(model, "cpu")
    cases = parity_cases(example.wave, onnx_backend.hop)
    summary.parity = compare(torch_backend, onnx_backend, cases)
    worst = min(summary.parity, key=lambda r: r.snr_db)
    if not fp16 and worst.snr_db < MIN_SNR_DB:
        raise ExportError(
            f"parity check failed: ONNX vs PyTorch {worst.snr_db:.1f} dB at {worst.label} "
            f"{worst.shape} (needs {MIN_SNR_DB:g} dB); nothing written"
        )
    if fp16:
        if worst.snr_db == float("-inf"):
            raise ExportError(f"float16 graph gives NaN/Inf at {worst.label}; nothing written")
        summary.pesq = pesq_change(torch_backend, onnx_backend, example.wave, example.clean)
        summary.pesq_against = example.clean_name or "the noisy input"
        moved = summary.pesq[1] - summary.pesq[0]
        if abs(moved) > PESQ_WARN:
            summary.warnings.append(
                f"float16 graph moves PESQ on the example by {moved:+.3f} (over {PESQ_WARN})"
            )


def _check_stream(summary: ExportSummary, graph_path: Path, model, example: _Example) -> None:
    """Stream the example through the graph; raise ExportError if it falls short."""
    from mbsnet.export.streaming import check_stream_graph

    try:
        summary.parity = check_stream_graph(graph_path, model, example.wave)
    except RuntimeSetupError as err:
        raise ExportError(f"parity check: {err}") from err
    worst = min(summary.parity, key=lambda r: r.snr_db)
    if worst.snr_db < MIN_SNR_DB:
        raise ExportError(
            f"parity check failed: streamed ONNX vs offline PyTorch {worst.snr_db:.1f} dB at "
            f"{worst.label} (needs {MIN_SNR_DB:g} dB); nothing written"
        )


def _record(model, checkpoint: Path, opset: int, fp16: bool, streaming: bool):
    """(graph proto, metadata) of the offline or the streaming graph."""
    if streaming:
        from mbsnet.export.streaming import record_stream_graph, stream_metadata

        if fp16:
            raise ExportError("--fp16 is not available with --streaming (float32 only)")
        metadata = stream_metadata(model, file_sha256(checkpoint))
        return record_stream_graph(model, opset), metadata
    metadata = graph_metadata(model, file_sha256(checkpoint), "float16" if fp16 else "float32")
    proto = record_graph(model, opset)
    return (to_float16(proto) if fp16 else proto), metadata


def export_checkpoint(
    checkpoint: Path | None,
    output: Path,
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    check: bool = True,
    example: Path | None = None,
    streaming: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> ExportSummary:
    """Export a checkpoint to one ONNX graph at `output`, checked against PyTorch.

    streaming: the causal model's one-hop step with its states (`mbsnet.export.streaming`)
    instead of the waveform-to-waveform graph; checked by streaming the example through it.

    The file is written beside `output` under a temporary name and renamed into place only
    after the checker and the parity check pass, so a failure leaves an existing file as it
    was. `log` receives progress lines.

    Raises:
        ExportError: bad checkpoint, unwritable output, an opset the exporter cannot honour,
            or a failed check; one line each.
    """
    checkpoint = checkpoint if checkpoint is not None else default_checkpoint(streaming)
    _check_output(output)
    audio = _load_example(example or BUNDLED_EXAMPLE) if check else None
    try:
        model = model_from_checkpoint(checkpoint, map_location="cpu")
    except CheckpointError as err:
        raise ExportError(str(err)) from None
    kind = "streaming step of " if streaming else ""
    params = count_parameters(model)
    log(f"exporting {kind}{model.ARCH} ({params:,} parameters), opset {opset}")
    proto, metadata = _record(model, checkpoint, opset, fp16, streaming)
    proto = finish_graph(proto, metadata)
    data = proto.SerializeToString()
    summary = ExportSummary(output, metadata, len(data))
    try:
        with atomic_path(output) as tmp:
            tmp.write_bytes(data)
            if audio is not None and streaming:
                _check_stream(summary, tmp, model, audio)
            elif audio is not None:
                _check(summary, tmp, model, audio, fp16)
    except OSError as err:
        raise ExportError(f"{output}: cannot write ({err.strerror or err})") from err
    return summary
