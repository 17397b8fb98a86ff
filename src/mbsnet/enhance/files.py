"""File- and folder-level enhancement: plan outputs, enhance each file, report every failure.

One bad file never stops a run: its problem is printed as a single ``error: `` line and the
remaining files are still processed. Inputs are never overwritten, and outputs are written
atomically, so an interrupted run leaves either the old file or the complete new one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from mbsnet import SAMPLE_RATE
from mbsnet.audio import AudioError, AudioInfo, is_silent, read_audio, resample, write_audio
from mbsnet.enhance.backend import as_backend, is_out_of_memory
from mbsnet.enhance.chunking import enhance_array
from mbsnet.errors import one_line

AUDIO_SUFFIXES = frozenset({".wav", ".flac"})

# Extension -> soundfile format for outputs whose name asks for another container than the
# input's; the WAV family (WAV, WAVEX, RF64) all count as ".wav".
_WAV_FAMILY = frozenset({"WAV", "WAVEX", "RF64"})

PathLike = str | os.PathLike[str]


@dataclass
class EnhanceReport:
    """Outcome of `enhance_paths`: what was written, what failed and why, what to know."""

    done: list[tuple[Path, Path]] = field(default_factory=list)
    """(input, output) for every file written."""
    failed: list[tuple[Path, str]] = field(default_factory=list)
    """(input, one-line message) for every file that was not written."""
    warnings: list[tuple[Path, str]] = field(default_factory=list)
    """(input, one-line message) for files written despite something worth knowing."""

    def summary(self) -> str:
        """One line such as ``"3 files enhanced, 1 failed, 2 warnings"``."""
        parts = [f"{len(self.done)} file{'s' * (len(self.done) != 1)} enhanced"]
        parts.append(f"{len(self.failed)} failed")
        if self.warnings:
            parts.append(f"{len(self.warnings)} warning{'s' * (len(self.warnings) != 1)}")
        return ", ".join(parts)


def _output_format(out_path: Path, info: AudioInfo) -> tuple[str, str]:
    """(format, subtype) for the output: the input's, unless the output name asks otherwise."""
    wanted = out_path.suffix.lstrip(".").upper()
    if wanted == "WAV" and info.format in _WAV_FAMILY:
        return info.format, info.subtype
    if not wanted or wanted == info.format or wanted not in sf.available_formats():
        return info.format, info.subtype
    subtype = info.subtype if sf.check_format(wanted, info.subtype) else None
    return wanted, subtype or sf.default_subtype(wanted)


def enhance_file(
    model: Any,
    in_path: PathLike,
    out_path: PathLike,
    *,
    chunk_seconds: float | None = None,
    device: Any = None,
) -> list[str]:
    """Enhance one file and write the result atomically.

    The output keeps the input's length, sample rate, channel count, subtype and format
    (an output extension naming another format, e.g. ``.flac`` for a WAV input, switches
    the container). Audio at other rates is resampled to 16 kHz with soxr and back.
    Digital silence is written back as silence, with a warning.

    Args:
        model: a `Backend` (e.g. an ONNX session) or a PyTorch model (see `as_backend`).
        in_path: input audio file.
        out_path: output file; its folder is created if needed.
        chunk_seconds: see `enhance_array`.
        device: PyTorch models only: where to run (None: where the model is).

    Returns:
        Warnings, one line each (e.g. silence, clipped samples).

    Raises:
        AudioError: bad or too-short input, a non-finite model output, or an unwritable output.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    if _same_file(in_path, out_path):
        raise AudioError(out_path, "refusing to overwrite the input; choose another output")
    backend = as_backend(model, device)
    x, info = read_audio(in_path)
    warnings: list[str] = []
    fmt, subtype = _output_format(out_path, info)
    x16 = resample(x, info.samplerate, SAMPLE_RATE)
    min_samples = backend.min_samples
    if x16.shape[1] < min_samples:
        raise AudioError(
            in_path,
            f"too short: {info.frames / info.samplerate * 1000:.1f} ms; "
            f"at least {min_samples / SAMPLE_RATE * 1000:.0f} ms is needed",
        )
    if is_silent(x):
        warnings.append(f"{in_path}: digital silence (all samples are zero); output is silence")
        y = np.zeros_like(x)
    else:
        y16 = enhance_array(backend, x16, chunk_seconds=chunk_seconds)
        if not np.isfinite(y16).all():
            raise AudioError(in_path, "the model produced NaN or Inf samples; nothing written")
        y = resample(y16, SAMPLE_RATE, info.samplerate, length=info.frames)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AudioError(out_path, f"cannot create output folder ({err.strerror or err})") from err
    clipped = write_audio(out_path, y, info.samplerate, subtype=subtype, format=fmt)
    if clipped:
        warnings.append(f"{out_path}: {clipped} samples clipped to [-1, 1] for {subtype} output")
    return warnings


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _scan_folder(folder: Path) -> list[Path]:
    """*.wav / *.flac (any case) under `folder`, sorted; hidden files and folders are skipped
    (they hold temp files of interrupted writes and macOS '._' metadata, not audio)."""
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
            found.append(path)
    return sorted(found)


def collect_inputs(inputs: Sequence[PathLike]) -> list[tuple[Path, Path]]:
    """Expand inputs into (input file, relative output name) pairs.

    A file maps to its own name (even if missing or not audio: reading it reports the
    problem); a folder is searched recursively for *.wav / *.flac and mirrors its layout.
    The same file named twice is kept once.

    Returns:
        [(input path, relative output path), ...] in the order given, folders sorted.
    """
    pairs: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for item in map(Path, inputs):
        found = (
            [(p, p.relative_to(item)) for p in _scan_folder(item)]
            if item.is_dir()
            else [(item, Path(item.name))]
        )
        for path, rel in found:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                pairs.append((path, rel))
    return pairs


def plan_outputs(inputs: Sequence[PathLike], output: PathLike) -> list[tuple[Path, Path]]:
    """Map inputs to output paths.

    OUTPUT is a file when there is exactly one input and it is not a folder, and OUTPUT is
    not an existing folder (nor spelled with a trailing separator); otherwise it is a folder
    (created when writing) that mirrors the inputs' relative names. Files already inside an
    output folder nested in an input folder are left out. Nothing is checked or created
    here: `enhance_paths` refuses unsafe outputs per file.

    Returns:
        [(input path, output path), ...].
    """
    pairs = collect_inputs(inputs)
    out = Path(output)
    as_folder = str(output).endswith((os.sep, "/")) or out.is_dir()
    if len(inputs) == 1 and not Path(inputs[0]).is_dir() and not as_folder:
        return [(path, out) for path, _ in pairs]
    # An output folder nested inside an input folder holds earlier results, not inputs:
    # enhancing them again would nest out/out/... on every run.
    nested = [Path(p) for p in inputs if Path(p).is_dir() and _strictly_inside(out, Path(p))]
    if nested:
        pairs = [(path, rel) for path, rel in pairs if not _strictly_inside(path, out)]
    return [(path, out / rel) for path, rel in pairs]


def _strictly_inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path != folder and path.is_relative_to(folder)


class _OutputGuard:
    """Refuses outputs that would overwrite an input or another file's output."""

    def __init__(self, inputs: Sequence[Path]) -> None:
        self._inputs_by_id = {_file_id(p): p for p in inputs if p.exists()}
        self._inputs_by_path = {p.resolve(): p for p in inputs}
        self._outputs: dict[Path, Path] = {}

    def check(self, in_path: Path, out_path: Path) -> None:
        resolved = out_path.resolve()
        victim = self._inputs_by_path.get(resolved)
        if victim is None and out_path.exists():
            victim = self._inputs_by_id.get(_file_id(out_path))  # hard links, case, symlinks
        if victim is not None:
            which = "this input" if victim == in_path else f"input {victim}"
            raise AudioError(out_path, f"refusing to overwrite {which}; choose another output")
        first = self._outputs.setdefault(resolved, in_path)
        if first != in_path:
            raise AudioError(out_path, f"already the output of {first}; inputs share a name")


def _file_id(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def enhance_paths(
    model: Any,
    inputs: Sequence[PathLike],
    output: PathLike,
    *,
    chunk_seconds: float | None = None,
    device: Any = None,
    progress: bool = True,
) -> EnhanceReport:
    """Enhance files and folders into `output`, carrying on past per-file failures.

    Errors and warnings are printed to stderr as single lines prefixed ``error: `` /
    ``warning: `` (through tqdm, so they do not break the progress bar).

    Args:
        model: a `Backend` (e.g. an ONNX session), or a PyTorch model, which is moved to
            `device` and put in eval mode.
        inputs: audio files and/or folders (searched recursively for *.wav / *.flac).
        output: output file or folder, see `plan_outputs`.
        chunk_seconds: see `enhance_array`; bounds memory for long files.
        device: PyTorch models only: 'cpu', 'cuda', ...; None keeps the model where it is.
        progress: show a progress bar over files.

    Returns:
        An `EnhanceReport`; the run failed for the files in `report.failed`.

    Raises:
        ValueError: the device is unusable (before any file is touched).
    """
    backend = as_backend(model, device)
    report = EnhanceReport()
    for item in map(Path, inputs):
        if item.is_dir() and not _scan_folder(item):
            _fail(report, item, f"{item}: no .wav or .flac files in this folder")
    plan = plan_outputs(inputs, output)
    guard = _OutputGuard([path for path, _ in plan])
    bar = tqdm(plan, disable=not progress, unit="file", file=sys.stderr, dynamic_ncols=True)
    for in_path, out_path in bar:
        bar.set_postfix_str(in_path.name, refresh=False)
        try:
            guard.check(in_path, out_path)
            warnings = enhance_file(backend, in_path, out_path, chunk_seconds=chunk_seconds)
        except AudioError as err:
            _fail(report, in_path, str(err))
        except Exception as err:
            if is_out_of_memory(err):
                _fail(report, in_path, f"{in_path}: out of memory; try a smaller --chunk-seconds")
            elif isinstance(err, OSError | ValueError):
                _fail(report, in_path, f"{in_path}: {err}")
            elif isinstance(err, RuntimeError):  # e.g. a CUDA kernel refusing this input
                _fail(report, in_path, f"{in_path}: the model failed on this file ({err})")
            else:
                raise
        else:
            report.done.append((in_path, out_path))
            for message in warnings:
                report.warnings.append((in_path, one_line(message)))
                tqdm.write(f"warning: {one_line(message)}", file=sys.stderr)
    return report


def _fail(report: EnhanceReport, path: Path, message: str) -> None:
    message = one_line(message)
    report.failed.append((path, message))
    tqdm.write(f"error: {message}", file=sys.stderr)
