"""`mbsnet export`: the click layer over `mbsnet.export.build` (click only at import)."""

from __future__ import annotations

import math
from pathlib import Path

import click

from mbsnet.export.common import DEFAULT_OPSET, MIN_SNR_DB, ExportError

_PATHS = click.Path(path_type=Path)


def _format_snr(snr: float) -> str:
    return "identical" if math.isinf(snr) and snr > 0 else f"{snr:.1f} dB"


_HELP = f"""Export CHECKPOINT as one ONNX graph from waveform to waveform.

Inputs: wave (batch, samples) and reference (batch, ref_samples), float32 at 16 kHz; the
reference is the signal whose level sets the gain (wave itself, or the whole file when wave
is a chunk). Output: enhanced (batch, samples). Unless --no-check, the written graph runs in
onnxruntime at several lengths and batch sizes and is compared with PyTorch; a float32 graph
under {MIN_SNR_DB:g} dB SNR is refused and nothing is written.

--streaming (causal models): instead, the one-hop step as a stateful graph, (hop, states) ->
(enhanced hop, new states), with the state shapes, hop, delay and latency in its
metadata_props; the check streams the example through it against the offline model.
"""


@click.command("export", help=_HELP)
@click.argument("checkpoint", required=False, type=_PATHS)
@click.option("-o", "--output", required=True, type=_PATHS, help="The .onnx file to write.")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True, help="ONNX opset.")
@click.option("--fp16", is_flag=True, help="Float16 graph (inputs and outputs stay float32).")
@click.option("--no-check", is_flag=True, help="Skip the onnxruntime-vs-PyTorch parity check.")
@click.option(
    "--example", type=_PATHS,
    help="Audio for the parity check (default: the bundled examples/noisy_p232_005.wav).",
)
@click.option(
    "--streaming", is_flag=True, help="Stateful one-hop graph of a causal model (real time)."
)
def export(
    checkpoint: Path | None, output: Path, opset: int, fp16: bool, no_check: bool,
    example: Path | None, streaming: bool,
) -> None:
    """`mbsnet export` (help text: _HELP, which shows the computed threshold)."""
    from mbsnet.export.build import export_checkpoint

    def log(message: str) -> None:
        click.echo(message, err=True)

    try:
        summary = export_checkpoint(
            checkpoint, output, opset=opset, fp16=fp16, check=not no_check,
            example=example, streaming=streaming, log=log,
        )
    except ExportError as error:
        raise click.ClickException(str(error)) from None
    for result in summary.parity:
        shape = "x".join(map(str, result.shape))
        log(f"  ONNX vs PyTorch, {result.label} ({shape}): {_format_snr(result.snr_db)}")
    if summary.pesq is not None:
        torch_pesq, onnx_pesq = summary.pesq
        log(f"  PESQ on the example (against {summary.pesq_against}): PyTorch {torch_pesq:.3f}, "
            f"float16 graph {onnx_pesq:.3f} ({onnx_pesq - torch_pesq:+.3f})")
    for line in summary.warnings:
        log(f"warning: {line}")
    meta = summary.metadata
    checked = "not checked" if no_check else "checked against PyTorch"
    if streaming:
        log(
            f"  streaming: hop {meta['hop']} samples, output lags by {meta['stream_delay']} "
            f"samples, algorithmic latency {meta['latency_ms']} ms"
        )
    click.echo(f"wrote {summary.path} ({meta['precision']}, {summary.size_bytes / 1e6:.2f} MB, "
               f"{checked})")
