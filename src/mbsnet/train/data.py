"""Paired training data: header scan of (clean, noisy) folders, seeded cuts, fixed validation.

Nothing is dropped silently: `scan_pairs` reads only file headers and lists every file it
cannot use (unpaired, length mismatch, unreadable, wrong rate, multichannel) with its reason.
Every random choice is a pure function of (seed, epoch, index): the datasets keep no state
but the epoch the training loop sets, so any worker, rank or resumed run sees the same item.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mbsnet import SAMPLE_RATE
from mbsnet.train.files import (
    AudioFile,
    DataError,
    Problem,
    check_file,
    group_problems,
    load_mono,
    relative_audio_names,
)

PathLike = str | os.PathLike[str]
Item = tuple[torch.Tensor, torch.Tensor, int]
"""(noisy (N,), clean (N,), valid length): samples past the length are zero padding."""

# Streams keep the draws of different datasets apart even when their seeds coincide.
_STREAM_PAIRED_CUT = 1


def seeded_rng(stream: int, seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one item: a pure function of its key (same in every process)."""
    if min(seed, epoch, index) < 0:
        raise ValueError(f"seed, epoch and index must be >= 0, got {(seed, epoch, index)}")
    return np.random.default_rng([stream, seed, epoch, index])


@dataclass(frozen=True)
class TrainPair:
    """One (noisy, clean) pair that passed the scan; both files share rate and frame count."""

    name: str
    noisy: Path
    clean: Path
    samplerate: int
    frames: int

    @property
    def length(self) -> int:
        """Samples at 16 kHz after loading (resampled when the file's rate differs)."""
        return AudioFile(self.clean, self.samplerate, self.frames).length


@dataclass
class PairScan:
    """Usable pairs of one (clean, noisy) folder pair and every problem found."""

    clean_dir: Path
    noisy_dir: Path
    pairs: list[TrainPair] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    n_clean: int = 0
    n_noisy: int = 0

    def summary(self) -> str:
        """One paragraph for the training log: counts, then each problem kind with names."""
        seconds = sum(p.length for p in self.pairs) / SAMPLE_RATE
        same = self.clean_dir.parent == self.noisy_dir.parent
        where = self.clean_dir.parent if same else f"{self.clean_dir} + {self.noisy_dir}"
        text = (
            f"{where}: {len(self.pairs)} usable pair(s) ({seconds / 60:.1f} min) "
            f"from {self.n_clean} clean / {self.n_noisy} noisy file(s)"
        )
        if not self.problems:
            return text + "; no problems."
        return (
            text
            + f"; {len(self.problems)} problem(s): "
            + "; ".join(group_problems(self.problems))
            + "."
        )

    def raise_if_empty(self) -> None:
        """Raise `DataError` (with the summary) when no pair is usable."""
        if not self.pairs:
            raise DataError(f"no usable training pairs. {self.summary()}")


def _pair_problems(
    name: str, noisy: Path, clean: Path, resample: bool
) -> tuple[AudioFile | None, list[Problem]]:
    """Check both files of a pair; the clean file's header when the pair is usable."""
    heads, problems = [], []
    for side, path in (("clean", clean), ("noisy", noisy)):
        head, found = check_file(path, resample, name=f"{side}/{name}")
        heads.append(head)
        problems += found
    clean_head, noisy_head = heads
    if problems or clean_head is None or noisy_head is None:
        return None, problems
    if clean_head.samplerate != noisy_head.samplerate:
        detail = f"clean {clean_head.samplerate} Hz, noisy {noisy_head.samplerate} Hz"
        return None, [Problem("rate_mismatch", name, detail)]
    if clean_head.frames != noisy_head.frames:
        detail = f"clean {clean_head.frames} vs noisy {noisy_head.frames} frames"
        return None, [Problem("length_mismatch", name, detail)]
    return clean_head, []


def scan_pairs(clean_dir: PathLike, noisy_dir: PathLike, resample: bool = False) -> PairScan:
    """Pair files by relative name (recursive *.wav / *.flac), reading headers only.

    Args:
        clean_dir: folder of clean targets.
        noisy_dir: folder of noisy inputs with the same relative names.
        resample: accept rates other than 16 kHz (resampled with soxr on load); without
            it such files are reported as problems and left out.

    Returns:
        A `PairScan`: good pairs sorted by name, plus every problem (the pair is left out).

    Raises:
        DataError: a folder does not exist.
    """
    clean_dir, noisy_dir = Path(clean_dir), Path(noisy_dir)
    for role, folder in (("clean", clean_dir), ("noisy", noisy_dir)):
        if not folder.is_dir():
            raise DataError(f"{role} folder not found: {folder}")
    clean, noisy = relative_audio_names(clean_dir), relative_audio_names(noisy_dir)
    scan = PairScan(clean_dir, noisy_dir, n_clean=len(clean), n_noisy=len(noisy))
    scan.problems += [Problem("clean_only", n, "no noisy file") for n in clean if n not in noisy]
    scan.problems += [Problem("noisy_only", n, "no clean file") for n in noisy if n not in clean]
    for name, clean_path in clean.items():
        if name not in noisy:
            continue
        head, problems = _pair_problems(name, noisy[name], clean_path, resample)
        scan.problems += problems
        if head is not None:
            scan.pairs.append(
                TrainPair(name, noisy[name], clean_path, head.samplerate, head.frames)
            )
    return scan


def find_paired_splits(data_dir: PathLike, resample: bool = False) -> tuple[PairScan, PairScan]:
    """Scan ``D/train/{clean,noisy}`` and ``D/valid/{clean,noisy}`` (or ``D/test/...``).

    ``valid`` is preferred when both exist: a test set chosen from is no longer held out.

    Returns:
        (train_scan, valid_scan), both with at least one pair.

    Raises:
        DataError: naming the missing folder, or a split without usable pairs.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    valid = next((root / s for s in ("valid", "test") if (root / s).is_dir()), None)
    if not (root / "train").is_dir() or valid is None:
        missing = [f"{root / 'train'}"] if not (root / "train").is_dir() else []
        missing += [f"{root / 'valid'} (or {root / 'test'})"] if valid is None else []
        raise DataError(
            f"{root} needs train/{{clean,noisy}} and valid/{{clean,noisy}} (or test/...); "
            f"missing: {', '.join(missing)}"
        )
    scans = []
    for split in (root / "train", valid):
        scan = scan_pairs(split / "clean", split / "noisy", resample=resample)
        scan.raise_if_empty()
        scans.append(scan)
    return scans[0], scans[1]


def _load_pair(pair: TrainPair) -> tuple[np.ndarray, np.ndarray]:
    """Both signals as (N,) float32 at 16 kHz, N = pair.length."""
    shape = AudioFile(pair.clean, pair.samplerate, pair.frames)
    return load_mono(shape.with_path(pair.noisy)), load_mono(shape)


def _window(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """x[start:start+length], zero-padded at the end when x is too short."""
    out = np.zeros(length, dtype=np.float32)
    part = x[start : start + length]
    out[: part.shape[0]] = part
    return out


def _as_item(noisy: np.ndarray, clean: np.ndarray, length: int) -> Item:
    return torch.from_numpy(noisy), torch.from_numpy(clean), int(length)


def check_key(key: object, n: int, epoch: int) -> tuple[int, int]:
    """(epoch, index) from an int index or an explicit (epoch, index) key."""
    if isinstance(key, tuple):
        epoch, key = key
    if not isinstance(key, numbers.Integral) or not 0 <= int(key) < n:
        raise IndexError(f"index {key!r} out of range for a dataset of {n} items")
    return int(epoch), int(key)


def non_negative(value: int, what: str) -> int:
    """`value` as an int, refusing negatives (numpy's seed sequences take none)."""
    if int(value) != value or value < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {value!r}")
    return int(value)


def seconds_to_samples(seconds: float, what: str) -> int:
    """Whole 16 kHz samples in `seconds`; at least 0.1 s (one model frame is not an item)."""
    samples = round(seconds * SAMPLE_RATE)
    if samples < SAMPLE_RATE // 10:
        raise ValueError(f"{what} must be at least 0.1 s, got {seconds}")
    return samples


class PairedTrainSet(Dataset):
    """Random fixed-length cuts of (noisy, clean) pairs; the cut depends on (seed, epoch, index).

    Call `set_epoch(epoch)` every epoch, like a DistributedSampler. Keys may also be
    ``(epoch, index)`` tuples, which ignore the stored epoch: use those from the sampler when
    DataLoader workers are persistent, since `set_epoch` on the main process does not reach
    them. Files are read on every access (nothing is cached).

    Items: (noisy (N,), clean (N,), length) with N = segment samples; files shorter than the
    segment are zero-padded at the end and `length` counts their real samples.
    """

    def __init__(self, pairs: Sequence[TrainPair], segment_seconds: float = 2.0, seed: int = 0):
        if not pairs:
            raise DataError("PairedTrainSet needs at least one pair")
        self.pairs = list(pairs)
        self.segment = seconds_to_samples(segment_seconds, "segment_seconds")
        self.seed = non_negative(seed, "seed")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the cuts of this epoch (the only state; set it before iterating)."""
        self.epoch = non_negative(epoch, "epoch")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int | tuple[int, int]) -> Item:
        epoch, index = check_key(key, len(self.pairs), self.epoch)
        pair = self.pairs[index]
        rng = seeded_rng(_STREAM_PAIRED_CUT, self.seed, epoch, index)
        start = int(rng.integers(0, max(pair.length - self.segment, 0) + 1))
        noisy, clean = _load_pair(pair)
        length = min(self.segment, pair.length - start)
        return _as_item(
            _window(noisy, start, self.segment), _window(clean, start, self.segment), length
        )

    def describe(self) -> str:
        """One line for the log."""
        short = sum(p.length < self.segment for p in self.pairs)
        return (
            f"train: {len(self.pairs)} pairs, random {self.segment / SAMPLE_RATE:.2f} s cuts "
            f"(seed {self.seed}, per epoch and index); {short} shorter file(s) zero-padded"
        )


def _cut_starts(length: int, cut: int, count: int) -> list[int]:
    """Starts of `count` cuts centred in equal slices of the possible range (deduplicated)."""
    room = length - cut
    if room <= 0:
        return [0]
    return sorted({round((j + 0.5) * room / count) for j in range(count)})


class ValidationSet(Dataset):
    """Fixed validation items: whole files or evenly spaced cuts, identical every epoch.

    It has its own settings and never looks at the training segment length. Modes:
    ``"full"`` returns whole files (variable length: batch size 1, or pad and mask by length);
    ``"cuts"`` returns `cuts_per_file` cuts of `cut_seconds` per file at positions computed
    once from the file lengths, so every epoch and process scores the same audio.
    """

    def __init__(
        self,
        pairs: Sequence[TrainPair],
        mode: str = "full",
        cut_seconds: float = 4.0,
        cuts_per_file: int = 1,
    ):
        if mode not in ("full", "cuts"):
            raise ValueError(f"mode must be 'full' or 'cuts', got {mode!r}")
        if not pairs:
            raise DataError("ValidationSet needs at least one pair")
        if cuts_per_file < 1:
            raise ValueError(f"cuts_per_file must be >= 1, got {cuts_per_file}")
        self.pairs, self.mode = list(pairs), mode
        self.cut = seconds_to_samples(cut_seconds, "cut_seconds")
        self.cuts_per_file = int(cuts_per_file)
        # (pair index, start, samples returned): the whole plan, fixed here once.
        self.items: list[tuple[int, int, int]] = []
        for i, pair in enumerate(self.pairs):
            if mode == "full":
                self.items.append((i, 0, pair.length))
            else:
                starts = _cut_starts(pair.length, self.cut, self.cuts_per_file)
                self.items += [(i, start, self.cut) for start in starts]

    def set_epoch(self, epoch: int) -> None:
        """No effect: validation items do not depend on the epoch (kept for uniform loops)."""

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Item:
        _, index = check_key(index, len(self.items), 0)
        pair_index, start, size = self.items[index]
        pair = self.pairs[pair_index]
        noisy, clean = _load_pair(pair)
        length = min(size, pair.length - start)
        return _as_item(_window(noisy, start, size), _window(clean, start, size), length)

    def describe(self) -> str:
        """One line for the log, e.g. ``validation: 6 files -> 6 fixed cuts of 4.00 s ...``."""
        total = sum(p.length for p in self.pairs) / SAMPLE_RATE
        if self.mode == "full":
            return (
                f"validation: {len(self.pairs)} whole files ({total / 60:.1f} min, "
                f"longest {max(p.length for p in self.pairs) / SAMPLE_RATE:.1f} s), "
                "same every epoch"
            )
        short = sum(p.length < self.cut for p in self.pairs)
        return (
            f"validation: {len(self.pairs)} files -> {len(self.items)} fixed cuts of "
            f"{self.cut / SAMPLE_RATE:.2f} s (up to {self.cuts_per_file} per file, evenly "
            f"spaced, same every epoch); {short} shorter file(s) zero-padded"
        )


def collate_fixed(batch: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack equal-length items.

    Shape:
        items of (N,), (N,), int -> noisy (B, N), clean (B, N), lengths (B,) int64.

    Raises:
        ValueError: items differ in length (whole-file validation needs batch size 1).
    """
    sizes = sorted({int(item[0].shape[-1]) for item in batch})
    if len(sizes) != 1:
        raise ValueError(
            f"collate_fixed needs equal-length items, got lengths {sizes[:5]}; use batch_size=1 "
            "for whole-file validation or ValidationSet(mode='cuts')"
        )
    noisy = torch.stack([item[0] for item in batch])
    clean = torch.stack([item[1] for item in batch])
    lengths = torch.tensor([int(item[2]) for item in batch], dtype=torch.int64)
    return noisy, clean, lengths
