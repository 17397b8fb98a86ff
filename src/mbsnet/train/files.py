"""Training audio files: header-only checks, problem lists, and loading as mono 16 kHz.

Scans read headers only (plus the cheap WAV truncation check of `mbsnet.audio`), so a corpus
of tens of thousands of files is checked in seconds. What a header cannot show (NaN samples,
a file changed after the scan) raises `AudioError` / `DataError` when the file is loaded.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from mbsnet import SAMPLE_RATE
from mbsnet.audio import AudioError, libsndfile_reason, probe_audio, read_audio, resample

AUDIO_SUFFIXES = frozenset({".wav", ".flac"})
_NAMES_SHOWN = 5  # per problem kind in a summary; `problems` keeps them all

PathLike = str | os.PathLike[str]

KIND_LABELS = {
    "clean_only": "clean file(s) without a noisy file",
    "noisy_only": "noisy file(s) without a clean file",
    "length_mismatch": "pair(s) of different lengths",
    "rate_mismatch": "pair(s) with different clean and noisy rates",
    "unreadable": "unreadable file(s)",
    "wrong_rate": "file(s) not at 16 kHz",
    "multichannel": "multichannel file(s)",
}
KIND_HINTS = {
    "wrong_rate": (
        f"mbsnet trains at {SAMPLE_RATE} Hz: set data.resample = true (mbsnet train "
        "--set data.resample=true) to resample on load with soxr, or resample the corpus first"
    ),
    "multichannel": "mbsnet trains on mono audio: downmix or pick a channel first",
}


class DataError(ValueError):
    """Training data that cannot be used as given; the message says what and where."""


@dataclass(frozen=True)
class Problem:
    """Why one file or pair is left out: a `KIND_LABELS` key, its name, and the detail."""

    kind: str
    name: str
    detail: str

    def __str__(self) -> str:
        hint = KIND_HINTS.get(self.kind)
        return f"{self.name}: {self.detail}" + (f" ({hint})" if hint else "")


@dataclass(frozen=True)
class AudioFile:
    """A file that passed the header scan: path, native rate and frame count."""

    path: Path
    samplerate: int
    frames: int

    @property
    def length(self) -> int:
        """Samples at 16 kHz after loading (soxr's output length, round(frames * ratio))."""
        return round(self.frames * SAMPLE_RATE / self.samplerate)

    def with_path(self, path: Path) -> AudioFile:
        return replace(self, path=path)


def group_problems(problems: Sequence[Problem]) -> list[str]:
    """One clause per problem kind: count, label, first names with details, the hint."""
    clauses = []
    for kind, label in KIND_LABELS.items():
        found = [p for p in problems if p.kind == kind]
        if not found:
            continue
        shown = [p.name if kind.endswith("_only") else f"{p.name} ({p.detail})" for p in found]
        more = len(shown) - _NAMES_SHOWN
        names = ", ".join(shown[:_NAMES_SHOWN]) + (f", ... ({more} more)" if more > 0 else "")
        hint = f" [{KIND_HINTS[kind]}]" if kind in KIND_HINTS else ""
        clauses.append(f"{len(found)} {label}{hint}: {names}")
    return clauses


def check_file(path: Path, resample: bool, name: str) -> tuple[AudioFile | None, list[Problem]]:
    """(the file, []) when usable, else (None, its problems) reported under `name`."""
    try:
        info = probe_audio(path)
    except AudioError as err:
        return None, [Problem("unreadable", name, err.problem)]
    problems = []
    if info.channels != 1:
        problems.append(Problem("multichannel", name, f"{info.channels} channels"))
    if info.samplerate != SAMPLE_RATE and not resample:
        problems.append(Problem("wrong_rate", name, f"{info.samplerate} Hz"))
    if problems:
        return None, problems
    return AudioFile(path, info.samplerate, info.frames), []


def _is_audio(path: Path, root: Path) -> bool:
    # Hidden names are temp files of interrupted atomic writes or macOS '._' metadata.
    rel = path.relative_to(root)
    hidden = any(part.startswith(".") for part in rel.parts)
    return not hidden and path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()


def relative_audio_names(folder: Path) -> dict[str, Path]:
    """Relative posix name -> path of every *.wav / *.flac under `folder`, sorted by name."""
    found = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if _is_audio(p, folder)}
    return dict(sorted(found.items()))


def collect_audio_files(dirs: PathLike | Iterable[PathLike]) -> list[Path]:
    """Every *.wav / *.flac under the folders (recursive), sorted per folder, in folder order.

    Raises:
        DataError: a folder does not exist.
    """
    if isinstance(dirs, str | os.PathLike):
        dirs = [dirs]
    files: dict[Path, None] = {}  # ordered set: a folder listed twice adds nothing
    for folder in map(Path, dirs):
        if not folder.is_dir():
            raise DataError(f"audio folder not found: {folder}")
        files.update(dict.fromkeys(relative_audio_names(folder).values()))
    return list(files)


def holdout_split(
    files: Sequence[Path], fraction: float, role: str
) -> tuple[list[Path], list[Path]]:
    """Split files into (train, held out): the `fraction` with the lowest hash of their name.

    The choice depends on each file's name only (SHA-1 of its basename), so it is the same
    on every machine and does not move when files are added elsewhere in the folder. At least
    one file is held out and at least one is kept.

    Raises:
        DataError: fewer than two files, so nothing can be held out.
    """
    if len(files) < 2:
        raise DataError(
            f"{role}: {len(files)} file(s) cannot be split into training and validation; "
            f"give held-out {role} folders for validation"
        )
    ranked = sorted(files, key=lambda f: hashlib.sha1(Path(f).name.encode()).hexdigest())
    count = min(len(files) - 1, max(1, round(fraction * len(files))))
    held = set(ranked[:count])
    return [f for f in files if f not in held], [f for f in files if f in held]


@dataclass
class FileScan:
    """Usable files of one role (speech, noise, rir) and the problems of the others."""

    role: str
    files: list[AudioFile] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def summary(self) -> str:
        """One clause, e.g. ``"noise: 6 of 7 file(s) usable (1 unreadable file(s): ...)"``."""
        total = len(self.files) + len({p.name for p in self.problems})
        text = f"{self.role}: {len(self.files)} of {total} file(s) usable"
        if self.problems:
            text += " (" + "; ".join(group_problems(self.problems)) + ")"
        return text


def scan_audio_files(paths: Iterable[PathLike], role: str) -> FileScan:
    """Header scan of mono files at any rate (loaded at 16 kHz); problems are listed, not raised."""
    scan = FileScan(role)
    for path in map(Path, paths):
        audio, problems = check_file(path, resample=True, name=str(path))
        scan.problems += problems
        if audio is not None:
            scan.files.append(audio)
    return scan


def _changed(path: Path, what: str) -> DataError:
    return DataError(f"{path}: {what} differs from the scan; was the file changed? Scan again")


def load_mono(audio: AudioFile) -> np.ndarray:
    """The whole file as (N,) float32 at 16 kHz, N = audio.length (checked like `read_audio`)."""
    x, info = read_audio(audio.path)
    if (info.samplerate, info.frames, info.channels) != (audio.samplerate, audio.frames, 1):
        raise _changed(audio.path, "rate, length or channel count")
    if info.samplerate != SAMPLE_RATE:
        x = resample(x, info.samplerate, SAMPLE_RATE, length=audio.length)
    return x[0]


def read_region(audio: AudioFile, start: int, length: int) -> np.ndarray:
    """Samples [start, start + length) at 16 kHz, reading only that part of the file.

    Used for long noise files. At other rates a margin around the region is resampled and
    cut off again, so soxr's edge transients stay outside. Positions are in 16 kHz samples;
    past the end of the file the result is zero-padded.
    """
    rate = audio.samplerate
    # Start on a sample of the full file's 16 kHz grid that falls on a native sample, so the
    # region is resampled in phase with a whole-file load (exactly, for 48 kHz files).
    grid = 1 if rate == SAMPLE_RATE else SAMPLE_RATE // math.gcd(rate, SAMPLE_RATE)
    margin = 0 if rate == SAMPLE_RATE else 256  # 16 ms: soxr HQ transients die out well before
    first16 = max(start - margin, 0) // grid * grid
    first = first16 * rate // SAMPLE_RATE
    stop = min(math.ceil((start + length + margin) * rate / SAMPLE_RATE), audio.frames)
    try:
        data, file_rate = sf.read(
            str(audio.path), start=first, stop=stop, dtype="float32", always_2d=True
        )
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(audio.path, f"truncated or corrupt ({libsndfile_reason(err)})") from err
    if file_rate != rate or data.shape[0] != stop - first:
        raise _changed(audio.path, "rate or length")
    if not np.isfinite(data).all():
        raise AudioError(audio.path, "contains NaN or Inf samples")
    x = data[:, 0]
    if rate != SAMPLE_RATE:
        x = resample(x[None], rate, SAMPLE_RATE)[0][start - first16 : start - first16 + length]
    return np.pad(x, (0, length - x.shape[0])) if x.shape[0] < length else x[:length]
