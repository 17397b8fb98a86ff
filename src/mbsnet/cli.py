"""The `mbsnet` command line: a thin click layer over the library functions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import torch

from mbsnet import __version__

DEFAULT_CHUNK_SECONDS = 30.0
"""Longer inputs are enhanced in overlapping chunks of this length, bounding peak memory."""


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def _load_model(checkpoint: Path, device: torch.device) -> torch.nn.Module:
    from mbsnet.checkpoint import CheckpointError, model_from_checkpoint

    try:
        return model_from_checkpoint(checkpoint, map_location="cpu").to(device)
    except CheckpointError as error:
        raise click.ClickException(str(error)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mbsnet")
def main() -> None:
    """mbsnet: speech enhancement with MBS-Net (band split + Mamba)."""


@main.command()
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--preset", help="Describe a preset (default: base) instead of a checkpoint.")
@click.option(
    "--arch", default="mbsnet", show_default=True, help="Architecture for --preset: mbsnet|bsrnn."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(checkpoint: Path | None, preset: str | None, arch: str, as_json: bool) -> None:
    """Parameters per module, total, and MACs per second of audio for a preset or CHECKPOINT."""
    from mbsnet.info import describe, format_info
    from mbsnet.models import DEFAULT_PRESET, create_model, preset_config

    if checkpoint is not None and preset is not None:
        raise click.UsageError("give either CHECKPOINT or --preset, not both")
    if checkpoint is not None:
        model, source = _load_model(checkpoint, torch.device("cpu")), str(checkpoint)
    else:
        try:
            if arch == "mbsnet":
                preset = preset or DEFAULT_PRESET
                model, source = create_model(arch, preset_config(preset)), f"preset {preset}"
            elif preset is not None:
                raise ValueError(f"presets are defined for mbsnet only, not {arch}")
            else:
                model, source = create_model(arch), "default config"
        except ValueError as error:
            raise click.UsageError(str(error)) from None
    description = describe(model.eval(), source)
    if as_json:
        click.echo(json.dumps(description.to_json_dict(), indent=2))
    else:
        click.echo(format_info(description))


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path),
    help="Output file (one input file) or folder (mirrors the input names).",
)
@click.option(
    "--checkpoint", required=True, type=click.Path(path_type=Path),
    help="Model checkpoint (.pt) written by mbsnet.",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option(
    "--chunk-seconds", type=click.FloatRange(min=2.0), default=DEFAULT_CHUNK_SECONDS,
    show_default=True, help="Enhance longer inputs in overlapping chunks of this length.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def enhance(
    inputs: tuple[Path, ...],
    output: Path,
    checkpoint: Path,
    device: str,
    chunk_seconds: float,
    quiet: bool,
) -> None:
    """Enhance INPUT files or folders (*.wav, *.flac, searched recursively) into OUTPUT.

    Any sample rate and channel count; the output keeps the input's length, rate, channels
    and sample format. A bad file is reported on one line and the others go on; the exit
    code is 1 if any file failed.
    """
    from mbsnet.enhance import enhance_paths

    torch_device = _resolve_device(device)
    model = _load_model(checkpoint, torch_device)
    report = enhance_paths(
        model, list(inputs), output,
        chunk_seconds=chunk_seconds, device=torch_device, progress=not quiet,
    )
    click.echo(f"enhanced {len(report.done)} file(s), {len(report.failed)} failed", err=True)
    if report.failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
