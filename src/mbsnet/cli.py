"""The `mbsnet` command line: a thin click layer over the library functions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mbsnet import __version__

if TYPE_CHECKING:
    import torch

    from mbsnet.enhance.backend import Backend

# torch is imported inside the commands, and only by those that need it: metric worker
# processes re-import this module (a top-level torch import cost each ~1.7 s of start-up),
# and `--onnx` and `eval --enhanced-dir` run without torch altogether.

DEFAULT_CHUNK_SECONDS = 30.0
"""Longer inputs are enhanced in overlapping chunks of this length, bounding peak memory."""


def _resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def _bundled_checkpoint(causal: bool = False) -> Path:
    """The bundled default weights (causal: the streaming model), announced on one line."""
    from mbsnet.weights import default_checkpoint

    try:
        path = default_checkpoint(causal)
    except FileNotFoundError as error:
        raise click.ClickException(str(error)) from None
    which = "causal default" if causal else "default"
    click.echo(f"no --checkpoint given: using the bundled {which} model ({path})", err=True)
    return path


def _load_model(checkpoint: Path, device: torch.device) -> torch.nn.Module:
    from mbsnet.checkpoint import CheckpointError, model_from_checkpoint

    try:
        return model_from_checkpoint(checkpoint, map_location="cpu").to(device)
    except CheckpointError as error:
        raise click.ClickException(str(error)) from None


def _load_backend(
    checkpoint: Path | None,
    onnx: Path | None,
    device: str,
    threads: int | None,
    stream: bool = False,
) -> Backend:
    """The network a command runs: a PyTorch checkpoint, an exported ONNX graph, or (neither
    given) the bundled default model; stream: hop by hop through a causal model's streamer
    (a causal checkpoint, a graph from `mbsnet export --streaming`, or the bundled causal)."""
    if checkpoint is not None and onnx is not None:
        raise click.UsageError("give either --checkpoint or --onnx")
    if checkpoint is None and onnx is None:
        checkpoint = _bundled_checkpoint(causal=stream)
    if stream:
        return _streaming_backend(checkpoint, onnx, device, threads)
    if onnx is not None:
        from mbsnet.export.runtime import OnnxBackend, RuntimeSetupError

        try:
            backend = OnnxBackend(onnx, device=device, threads=threads)
        except RuntimeSetupError as error:
            raise click.ClickException(str(error)) from None
        note = f" ({backend.note})" if backend.note else ""
        click.echo(f"onnxruntime runs {onnx} on {backend.provider}{note}", err=True)
        return backend
    import torch

    from mbsnet.enhance.torch_backend import TorchBackend

    if threads is not None:
        torch.set_num_threads(threads)
    torch_device = _resolve_device(device)
    return TorchBackend(_load_model(checkpoint, torch_device), torch_device)


def _streaming_backend(
    checkpoint: Path | None, onnx: Path | None, device: str, threads: int | None
) -> Backend:
    from mbsnet.stream.backend import StreamingBackend

    if onnx is not None:
        from mbsnet.export.runtime import RuntimeSetupError
        from mbsnet.export.stream_runtime import OnnxHopRunner

        try:
            runner = OnnxHopRunner(onnx, device=device, threads=threads)
        except RuntimeSetupError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"onnxruntime streams {onnx} on {runner.provider}", err=True)
        return StreamingBackend(runner)
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    assert checkpoint is not None  # _load_backend fills in the bundled one
    model = _load_model(checkpoint, _resolve_device(device))
    if not getattr(model, "causal", False):
        raise click.ClickException(
            f"{checkpoint}: not a causal model; --stream needs one (a *-causal preset, "
            "or the bundled causal default when no --checkpoint is given)"
        )
    return StreamingBackend(model)


_DEVICE_OPTION = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="auto: CUDA when it really works (for --onnx: onnxruntime's CUDA provider).",
)
_ONNX_OPTION = click.option(
    "--onnx", type=click.Path(path_type=Path),
    help="Run this graph (written by mbsnet export) with onnxruntime instead of PyTorch.",
)
_THREADS_OPTION = click.option(
    "--threads", type=click.IntRange(min=1),
    help="Intra-op threads (onnxruntime's, or torch.set_num_threads); default: all cores.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mbsnet")
def main() -> None:
    """mbsnet: speech enhancement with MBS-Net (band split + Mamba)."""


@main.command()
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--preset", help="Describe a preset instead of a checkpoint.")
@click.option(
    "--arch", default="mbsnet", show_default=True, help="Architecture for --preset: mbsnet|bsrnn."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(checkpoint: Path | None, preset: str | None, arch: str, as_json: bool) -> None:
    """Parameters per module, total, and MACs per second of audio for a preset or CHECKPOINT
    (default: the bundled default model)."""
    from mbsnet.info import describe, format_info
    from mbsnet.models import DEFAULT_PRESET, create_model, preset_config

    if checkpoint is not None and preset is not None:
        raise click.UsageError("give either CHECKPOINT or --preset, not both")
    if checkpoint is None and preset is None and arch == "mbsnet":
        checkpoint = _bundled_checkpoint()
    if checkpoint is not None:
        model, source = _load_model(checkpoint, _resolve_device("cpu")), str(checkpoint)
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
    "--checkpoint", type=click.Path(path_type=Path),
    help="Model checkpoint (.pt) written by mbsnet (or give --onnx).",
)
@_ONNX_OPTION
@_DEVICE_OPTION
@_THREADS_OPTION
@click.option(
    "--chunk-seconds", type=click.FloatRange(min=2.0), default=DEFAULT_CHUNK_SECONDS,
    show_default=True, help="Enhance longer inputs in overlapping chunks of this length.",
)
@click.option(
    "--reference", type=click.Path(path_type=Path),
    help="Clean reference of a single INPUT file: print its PESQ and STOI before and after.",
)
@click.option(
    "--stream", is_flag=True,
    help="Run a causal model hop by hop as in real time (a causal --checkpoint, a graph from "
    "export --streaming, or the bundled causal model) and report per-hop compute time.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def enhance(
    inputs: tuple[Path, ...],
    output: Path,
    checkpoint: Path | None,
    onnx: Path | None,
    device: str,
    threads: int | None,
    chunk_seconds: float,
    reference: Path | None,
    stream: bool,
    quiet: bool,
) -> None:
    """Enhance INPUT files or folders (*.wav, *.flac, searched recursively) into OUTPUT.

    Any sample rate and channel count; the output keeps the input's length, rate, channels
    and sample format. A bad file is reported on one line and the others go on; the exit
    code is 1 if any file failed.
    """
    from mbsnet.enhance import enhance_paths

    if reference is not None and (len(inputs) != 1 or inputs[0].is_dir()):
        raise click.UsageError("--reference goes with a single input file")
    backend = _load_backend(checkpoint, onnx, device, threads, stream=stream)
    report = enhance_paths(
        backend,
        list(inputs),
        output,
        chunk_seconds=None if stream else chunk_seconds,  # a stream's memory is its states
        progress=not quiet,
    )
    click.echo(f"enhanced {len(report.done)} file(s), {len(report.failed)} failed", err=True)
    if stream:
        click.echo(backend.timing().summary(), err=True)
    if report.failed:
        sys.exit(1)
    if reference is not None:
        click.echo(_before_and_after(inputs[0], output, reference))


def _before_and_after(noisy: Path, enhanced: Path, clean: Path) -> str:
    """PESQ (wb) and STOI of the noisy input and of the enhanced file, against `clean`."""
    from mbsnet.eval.pipeline import EvalError, score_against

    try:
        before, after = (score_against(clean, path, ("pesq", "stoi")) for path in (noisy, enhanced))
    except EvalError as error:
        raise click.ClickException(str(error)) from None
    parts = []
    for name in ("pesq", "stoi"):
        gain = after[name] - before[name]
        parts.append(f"{name.upper()} {before[name]:.3f} -> {after[name]:.3f} ({gain:+.3f})")
    return "  ".join(parts)


def _eval_pairs(test_dir: Path | None, noisy_dir: Path | None, clean_dir: Path | None):
    from mbsnet.eval.pairs import PairingError, find_pairs, find_test_dir_pairs

    if (test_dir is None) == (noisy_dir is None and clean_dir is None):
        raise click.UsageError("give either --test-dir or both --noisy-dir and --clean-dir")
    if test_dir is None and (noisy_dir is None or clean_dir is None):
        raise click.UsageError("--noisy-dir and --clean-dir go together")
    try:
        return find_test_dir_pairs(test_dir) if test_dir else find_pairs(noisy_dir, clean_dir)
    except PairingError as error:
        raise click.ClickException(str(error)) from None


def _eval_warn_pairing(pair_set, enhanced_dir: Path | None) -> None:
    from mbsnet.eval.pairs import missing_enhanced

    for line in pair_set.warnings():
        click.echo(f"warning: {line}", err=True)
    missing = missing_enhanced(pair_set.pairs, enhanced_dir) if enhanced_dir else []
    if missing:
        click.echo(
            f"warning: {len(missing)} noisy file(s) have no enhanced file in {enhanced_dir} "
            "and will fail", err=True,
        )


def _eval_source(
    checkpoint: Path | None, onnx: Path | None, enhanced_dir: Path | None, score_noisy: bool,
    device: str, threads: int | None, max_seconds: float | None,
):
    from mbsnet.eval.pipeline import ModelSource, make_source

    if enhanced_dir is not None or score_noisy:
        return make_source(enhanced_dir)
    if checkpoint is None and onnx is None:
        checkpoint = _bundled_checkpoint()
    backend = _load_backend(checkpoint, onnx, device, threads)
    what = f"checkpoint {checkpoint}" if checkpoint is not None else f"ONNX graph {onnx}"
    return ModelSource(backend, max_seconds=max_seconds, description=what)


def _eval_log(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _eval_log_errors(message: str) -> None:
    if message.startswith("error:"):
        _eval_log(message)


def _eval_finish(
    report, pair_set, source, out: Path, resample: bool, plots: bool, shown: list[str],
    baseline: tuple[Path, dict] | None, worse_by: float,
) -> None:
    """Rank 0: write the report, plots, the terminal table and the comparison with `baseline`
    (its path and rows); `shown`: warnings printed."""
    from mbsnet.eval.compare import comparison_json, format_comparison, write_comparison
    from mbsnet.eval.pipeline import prepare_pair
    from mbsnet.eval.report import format_table, plot_extremes, summarize, write_report

    report.pairing = pair_set.to_json_dict()
    paths = write_report(report, out)
    if plots:
        by_name = {pair.name: pair for pair in pair_set.pairs}

        def load(name: str) -> dict:
            p = prepare_pair(by_name[name], source, resample)
            return {"noisy": p.noisy, "enhanced": p.enhanced, "clean": p.clean}

        plot_extremes(report, out, load)
    click.echo(format_table(summarize(report)))
    if baseline is not None:
        content = comparison_json(report, baseline[1], str(baseline[0]), worse_by)
        write_comparison(content, out)
        click.echo(format_comparison(content))
    counts = {status: 0 for status in ("ok", "partial", "failed")}
    for row in report.rows:
        counts[row.status] += 1
    click.echo(
        f"scored {len(report.rows)} file(s): {counts['ok']} ok, {counts['partial']} partial "
        f"(some metrics missing), {counts['failed']} failed; see {paths['per_file']}", err=True,
    )
    # Pairing problems again (the start has scrolled away), and other ranks' warnings.
    for line in [*pair_set.warnings(), *(w for w in report.warnings if w not in shown)]:
        click.echo(f"warning: {line}", err=True)


@main.command("eval")
@click.option("--test-dir", type=click.Path(path_type=Path), help="Folder with noisy/ and clean/.")
@click.option("--noisy-dir", type=click.Path(path_type=Path), help="Noisy inputs (+ --clean-dir).")
@click.option("--clean-dir", type=click.Path(path_type=Path), help="Clean references.")
@click.option(
    "--checkpoint", type=click.Path(path_type=Path), help="Score this model's output (.pt)."
)
@_ONNX_OPTION
@click.option(
    "--enhanced-dir", type=click.Path(path_type=Path),
    help="Score these enhanced files (same relative names as the noisy ones).",
)
@click.option(
    "--noisy", "score_noisy", is_flag=True,
    help='Score the unprocessed noisy input (the "noisy" row of paper tables).',
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Report folder.")
@click.option(
    "--workers", type=click.IntRange(min=0),
    help="Metric processes (default: CPU count; 0: in this process); shared among torchrun ranks.",
)
@click.option("--extended", is_flag=True, help="Also ESTOI and SI-SDR.")
@click.option(
    "--resample", is_flag=True,
    help="Resample non-16 kHz pairs with soxr (not comparable to published tables).",
)
@click.option(
    "--max-seconds", type=click.FloatRange(min=2.0),
    help="Enhance files longer than this in chunks (default: whole files, as papers do).",
)
@_DEVICE_OPTION
@_THREADS_OPTION
@click.option("--plots", is_flag=True, help="Spectrograms of the worst and best files by PESQ.")
@click.option(
    "--baseline", type=click.Path(path_type=Path),
    help="An earlier report (its OUT folder or per_file.csv, e.g. of --noisy): count per metric "
    "the files scored lower than there, into vs_baseline.json.",
)
@click.option(
    "--worse-by", type=click.FloatRange(min=0.0),
    help="With --baseline: list the files whose PESQ falls by more than this (default 0.1, "
    "the default model's per-file target).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_command(
    test_dir: Path | None, noisy_dir: Path | None, clean_dir: Path | None,
    checkpoint: Path | None, onnx: Path | None, enhanced_dir: Path | None, score_noisy: bool,
    out: Path, workers: int | None, extended: bool, resample: bool, max_seconds: float | None,
    device: str, threads: int | None, plots: bool, baseline: Path | None,
    worse_by: float | None, quiet: bool,
) -> None:
    """Score a test set the way papers do: PESQ (wb), CSIG, CBAK, COVL, SSNR, STOI.

    The enhanced audio comes from --checkpoint, --onnx, --enhanced-dir, or the bundled default
    model when none is given; --noisy scores the noisy input itself. A model runs on whole
    files (in chunks only above --max-seconds, or when a file runs out of memory: such rows
    are marked chunked). Files are
    paired by relative name; unpaired files are listed, never dropped silently. Writes per_file.csv
    and summary.json (means and population std over valid values only) to OUT. Runs under
    `torchrun --nproc_per_node K` with each rank scoring a shard of the files.

    Exit code: 0 when every file got at least one metric (missing metrics are listed per
    file), 1 if any file failed entirely (unreadable, wrong rate, model error, ...).
    """
    import os
    from datetime import timedelta

    from mbsnet import distrib
    from mbsnet.eval.compare import DEFAULT_WORSE_BY, BaselineError, load_baseline
    from mbsnet.eval.pipeline import evaluate
    from mbsnet.eval.report import ReportError, merge_reports, require_matplotlib

    if sum(x is not None for x in (checkpoint, onnx, enhanced_dir)) + score_noisy > 1:
        raise click.UsageError("give one of --checkpoint, --onnx, --enhanced-dir and --noisy")
    if max_seconds is not None and (enhanced_dir is not None or score_noisy):
        raise click.UsageError("--max-seconds applies to a model (--checkpoint, --onnx, default)")
    try:
        if plots:
            require_matplotlib()
    except ReportError as error:
        raise click.ClickException(str(error)) from None
    if enhanced_dir is not None and not enhanced_dir.is_dir():
        raise click.ClickException(f"enhanced folder not found: {enhanced_dir}")
    if worse_by is not None and baseline is None:
        raise click.UsageError("--worse-by applies with --baseline")
    try:  # read before scoring: a bad baseline must not cost a finished evaluation
        baseline_rows = None if baseline is None else (baseline, load_baseline(baseline))
    except BaselineError as error:
        raise click.ClickException(str(error)) from None
    pair_set = _eval_pairs(test_dir, noisy_dir, clean_dir)
    # Ranks finish their shards at different times; give the slowest two hours to catch up.
    rank, world = distrib.init_from_env(timeout=timedelta(hours=2))
    try:
        if rank == 0:
            _eval_warn_pairing(pair_set, enhanced_dir)
        source = _eval_source(
            checkpoint, onnx, enhanced_dir, score_noisy, device, threads, max_seconds
        )
        workers = (os.cpu_count() or 1) if workers is None else workers
        if workers > 0:  # the machine's cores are shared by the ranks
            workers = max(1, workers // world)
        report = evaluate(
            distrib.shard(pair_set.pairs, rank, world), source, workers=workers,
            extended=extended, resample=resample, progress=not quiet and rank == 0,
            log=_eval_log if rank == 0 else _eval_log_errors,  # rank 0 gathers the warnings
        )
        merged = merge_reports(distrib.all_gather(report))
        if rank == 0:
            _eval_finish(
                merged, pair_set, source, out, resample, plots, report.warnings, baseline_rows,
                DEFAULT_WORSE_BY if worse_by is None else worse_by,
            )
    finally:
        distrib.cleanup()
    if merged.failed_files():
        sys.exit(1)


def _add_commands() -> None:
    from mbsnet.export.command import export  # click only: no torch at import
    from mbsnet.train.command import train, train_plot

    main.add_command(train)
    main.add_command(train_plot)
    main.add_command(export)


_add_commands()

if __name__ == "__main__":
    main()
