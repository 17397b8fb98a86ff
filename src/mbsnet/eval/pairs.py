"""Find the (noisy, clean) pairs of a test set, listing every file that could not be paired.

Files are matched by their path relative to the noisy and clean folders (``sub/a.wav`` pairs
with ``sub/a.wav``, extension included), searched recursively for *.wav / *.flac. Nothing is
dropped silently: files present on one side only, and pairs whose headers declare different
lengths at equal rates, are returned in the `PairSet` and printed as warnings by the caller.
Only file headers are read here; damaged files are left for the evaluation to report.

Torch-free, like the rest of `mbsnet.eval` outside the pipeline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

AUDIO_SUFFIXES = frozenset({".wav", ".flac"})
_NAMES_SHOWN = 10  # longer lists are cut in warnings (the summary keeps them all)

PathLike = str | os.PathLike[str]


class PairingError(ValueError):
    """The folders cannot be paired at all (missing folder, no pairs); one line."""


@dataclass(frozen=True)
class Pair:
    """One test item: its relative name (posix, e.g. ``sub/a.wav``) and both files."""

    name: str
    noisy: Path
    clean: Path


@dataclass(frozen=True)
class LengthMismatch:
    """A pair whose headers declare different frame counts at the same sample rate."""

    name: str
    noisy_frames: int
    clean_frames: int


@dataclass
class PairSet:
    """Matched pairs (sorted by name) and what could not be matched."""

    pairs: list[Pair] = field(default_factory=list)
    noisy_only: list[str] = field(default_factory=list)
    """Noisy files without a clean file of the same relative name: not evaluated."""
    clean_only: list[str] = field(default_factory=list)
    """Clean files without a noisy file: not evaluated."""
    length_mismatch: list[LengthMismatch] = field(default_factory=list)
    """Pairs kept in `pairs` (they become failed rows) whose lengths already differ on paper."""

    def warnings(self) -> list[str]:
        """One line per problem kind, with the count and (up to 10) names."""
        lines = []
        for names, what in (
            (self.noisy_only, "noisy file(s) have no clean file and are NOT evaluated"),
            (self.clean_only, "clean file(s) have no noisy file and are NOT evaluated"),
        ):
            if names:
                lines.append(f"{len(names)} {what}: {_shorten(names)}")
        if self.length_mismatch:
            shown = [
                f"{m.name} ({m.noisy_frames} vs {m.clean_frames})" for m in self.length_mismatch
            ]
            lines.append(
                f"{len(shown)} pair(s) differ in length (noisy vs clean frames) and will fail: "
                f"{_shorten(shown)}"
            )
        return lines

    def to_json_dict(self) -> dict[str, list]:
        """All unmatched names and mismatched pairs, for summary.json."""
        return {
            "noisy_only": list(self.noisy_only),
            "clean_only": list(self.clean_only),
            "length_mismatch": [
                {"file": m.name, "noisy_frames": m.noisy_frames, "clean_frames": m.clean_frames}
                for m in self.length_mismatch
            ],
        }


def _shorten(names: list[str]) -> str:
    more = len(names) - _NAMES_SHOWN
    return ", ".join(names[:_NAMES_SHOWN]) + (f", ... ({more} more)" if more > 0 else "")


def scan_audio(folder: Path) -> dict[str, Path]:
    """Relative posix name -> path of every *.wav / *.flac (any case) under `folder`.

    Hidden files and folders are skipped: they hold temp files of interrupted atomic writes
    and macOS '._' metadata, not test audio.
    """
    found = {}
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
            found[rel.as_posix()] = path
    return dict(sorted(found.items()))


def _header(path: Path) -> tuple[int, int] | None:
    """(rate, frames) from the header; None when unreadable (reading it later says why)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError):
        return None
    return int(info.samplerate), int(info.frames)


def _require_folder(folder: Path, role: str) -> None:
    if not folder.is_dir():
        raise PairingError(f"{role} folder not found: {folder}")


def find_pairs(noisy_dir: PathLike, clean_dir: PathLike) -> PairSet:
    """Pair the audio files of two folders by relative name.

    Args:
        noisy_dir: folder of noisy inputs (searched recursively).
        clean_dir: folder of clean references with the same relative names.

    Returns:
        A `PairSet`: matched pairs sorted by name, plus unmatched names on both sides and
        the pairs whose header lengths differ at equal rates (still in `pairs`).

    Raises:
        PairingError: a folder is missing, or no file could be paired.
    """
    noisy_dir, clean_dir = Path(noisy_dir), Path(clean_dir)
    _require_folder(noisy_dir, "noisy")
    _require_folder(clean_dir, "clean")
    noisy, clean = scan_audio(noisy_dir), scan_audio(clean_dir)
    result = PairSet(
        noisy_only=[name for name in noisy if name not in clean],
        clean_only=[name for name in clean if name not in noisy],
    )
    for name, noisy_path in noisy.items():
        if name not in clean:
            continue
        pair = Pair(name, noisy_path, clean[name])
        result.pairs.append(pair)
        heads = _header(pair.noisy), _header(pair.clean)
        if heads[0] and heads[1] and heads[0][0] == heads[1][0] and heads[0][1] != heads[1][1]:
            result.length_mismatch.append(LengthMismatch(name, heads[0][1], heads[1][1]))
    if not result.pairs:
        raise PairingError(
            f"no pairs: {len(noisy)} audio file(s) in {noisy_dir}, {len(clean)} in {clean_dir}, "
            "none with the same relative name"
        )
    return result


def find_test_dir_pairs(test_dir: PathLike) -> PairSet:
    """`find_pairs` on ``test_dir/noisy`` and ``test_dir/clean``."""
    test_dir = Path(test_dir)
    _require_folder(test_dir, "test")
    return find_pairs(test_dir / "noisy", test_dir / "clean")


def missing_enhanced(pairs: list[Pair], enhanced_dir: PathLike) -> list[str]:
    """Names of pairs with no file of the same relative name in `enhanced_dir`."""
    enhanced_dir = Path(enhanced_dir)
    return [pair.name for pair in pairs if not (enhanced_dir / pair.name).is_file()]
