"""Audio I/O that refuses to lie: every bad input becomes a one-line `AudioError`.

libsndfile is lenient on purpose (it reads a truncated WAV silently short, for instance), so
`read_audio` adds the checks a user needs before trusting an output: truncation, emptiness,
non-finite samples. Arrays are float32 shaped (channels, samples) throughout.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from mbsnet import SAMPLE_RATE
from mbsnet.atomic import atomic_path
from mbsnet.errors import one_line

# Subtypes stored as floating point: written as is. Everything else (integer PCM, A-law, lossy
# codecs, ...) is clipped first, because libsndfile converts out-of-range floats by wrapping.
FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})

# A RIFF/WAVE `data` chunk size of 0 or 0xFFFFFFFF means "unknown" (written by streaming tools
# that could not seek back); such files cannot be checked for truncation from the header.
_UNKNOWN_DATA_SIZES = (0, 0xFFFFFFFF)


class AudioError(Exception):
    """A problem with one audio file; `str()` is the single line ``"{path}: {problem}"``."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = one_line(problem)
        super().__init__(f"{path}: {self.problem}")


@dataclass(frozen=True)
class AudioInfo:
    """What `read_audio` learned about a file; enough to write the output the same way."""

    samplerate: int
    channels: int
    frames: int
    subtype: str
    format: str


def libsndfile_reason(err: Exception) -> str:
    """Condense a soundfile error to its useful part, e.g. 'flac decoder lost sync'."""
    reason = getattr(err, "error_string", None) or str(err)
    reason = one_line(reason)
    reason = reason.removeprefix("Error :").strip().rstrip(".")
    return reason or type(err).__name__


def _wav_truncation(path: Path) -> str | None:
    """Problem text if a RIFF/WAVE file holds fewer audio bytes than its header declares.

    Only little-endian RIFF is parsed (RF64/RIFX and other formats return None); a header
    that cannot be walked is left for libsndfile to judge.
    """
    file_size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        offset = 12
        while offset + 8 <= file_size:
            f.seek(offset)
            chunk_id, size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                present = file_size - (offset + 8)
                if size in _UNKNOWN_DATA_SIZES or present >= size:
                    return None
                return (
                    f"truncated: the WAV header declares {size} bytes of audio "
                    f"but only {present} are present"
                )
            offset += 8 + size + (size & 1)  # chunks are padded to an even length
    return None


def _check_finite(path: Path, x: np.ndarray) -> None:
    n_nan = int(np.isnan(x).sum())
    n_inf = int(np.isinf(x).sum())
    if n_nan or n_inf:
        parts = [f"{n} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "Inf")) if n]
        raise AudioError(path, f"contains {' and '.join(parts)} samples")


def probe_audio(path: str | os.PathLike[str]) -> AudioInfo:
    """Check a file's header without reading its samples (fast enough for whole corpora).

    Raises:
        AudioError: missing, a directory, unopenable, not audio, empty, or a WAV holding fewer
            audio bytes than its header declares.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    try:
        with path.open("rb"):  # libsndfile would report a permission problem as "System error"
            pass
    except OSError as err:
        raise AudioError(path, f"cannot open ({err.strerror or err})") from err
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        sinfo = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, f"not a readable audio file ({libsndfile_reason(err)})") from err
    info = AudioInfo(
        samplerate=int(sinfo.samplerate),
        channels=int(sinfo.channels),
        frames=int(sinfo.frames),
        subtype=str(sinfo.subtype),
        format=str(sinfo.format),
    )
    if info.frames == 0:
        raise AudioError(path, "empty (contains 0 audio samples)")
    truncation = _wav_truncation(path)
    if truncation:
        raise AudioError(path, truncation)
    return info


def read_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, AudioInfo]:
    """Read a whole audio file, refusing anything that is not complete, finite audio.

    Args:
        path: any format libsndfile reads (WAV, FLAC, OGG, ...).

    Shape:
        Returns x as (channels, samples), float32 in the file's own scale ([-1, 1] for PCM).

    Returns:
        (x, info) with the file's rate, channel count, frame count, subtype and format.

    Raises:
        AudioError: missing, unreadable, empty, truncated, or NaN/Inf samples.
    """
    path = Path(path)
    info = probe_audio(path)
    try:
        data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, f"truncated or corrupt ({libsndfile_reason(err)})") from err
    if data.shape[0] < info.frames:
        raise AudioError(
            path, f"truncated: header declares {info.frames} frames but only {data.shape[0]} read"
        )
    _check_finite(path, data)
    return np.ascontiguousarray(data.T), info


def is_silent(x: np.ndarray) -> bool:
    """True when every sample is exactly zero (digital silence)."""
    return not np.any(x)


def resample(x: np.ndarray, sr_in: int, sr_out: int, length: int | None = None) -> np.ndarray:
    """Resample with soxr ('HQ'); optionally zero-pad or crop to an exact length.

    Args:
        x: audio, (C, N).
        sr_in: rate of `x` in Hz.
        sr_out: wanted rate in Hz.
        length: if given, the output is padded with zeros or cropped at the end to exactly
            this many samples (used to return to an input's original length).

    Shape:
        (C, N) -> (C, M) with M ≈ N * sr_out / sr_in, or M = length.

    Returns:
        float32 array; `x` itself (as float32) when the rates are equal and no length is set.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected audio shaped (channels, samples), got shape {x.shape}")
    if sr_in != sr_out:
        # soxr works on (samples, channels); its one-shot call flushes, so no tail is lost.
        y = soxr.resample(np.ascontiguousarray(x.T), sr_in, sr_out, quality="HQ")
        x = np.ascontiguousarray(np.asarray(y, dtype=np.float32).reshape(-1, x.shape[0]).T)
    if length is not None:
        n = x.shape[1]
        if n > length:
            x = x[:, :length]
        elif n < length:
            x = np.pad(x, ((0, 0), (0, length - n)))
    return x


def write_audio(
    path: str | os.PathLike[str],
    x: np.ndarray,
    samplerate: int,
    subtype: str | None = None,
    format: str | None = None,
) -> int:
    """Write (C, N) audio atomically; integer subtypes are clipped to [-1, 1], never wrapped.

    Args:
        path: destination; replaced only once the whole file is written.
        x: audio, (C, N) float32.
        samplerate: rate in Hz.
        subtype: e.g. 'PCM_16', 'FLOAT'; None lets soundfile pick the format's default.
        format: e.g. 'WAV', 'FLAC'; None infers it from the file extension.

    Returns:
        The number of samples that were clipped (0 for float subtypes).

    Raises:
        AudioError: the file cannot be written, or the format/subtype pair is invalid.
    """
    path = Path(path)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected audio shaped (channels, samples), got shape {x.shape}")
    fmt = format or _format_from_suffix(path)
    sub = subtype or (sf.default_subtype(fmt) if fmt else None)
    x, clipped = _clip_for(x, sub)
    try:
        with atomic_path(path) as tmp:
            sf.write(str(tmp), _encoded(x, sub), samplerate, subtype=sub, format=fmt)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        raise AudioError(path, f"cannot write ({libsndfile_reason(err)})") from err
    except OSError as err:
        raise AudioError(path, f"cannot write ({err.strerror or err})") from err
    return clipped


def _clip_for(x: np.ndarray, subtype: str | None) -> tuple[np.ndarray, int]:
    """`x` clipped to [-1, 1] for integer subtypes (never wrapped), and how many samples were."""
    if subtype is not None and subtype.upper() in FLOAT_SUBTYPES:
        return x, 0
    clipped = int(np.count_nonzero(np.abs(x) > 1.0))
    return (np.clip(x, -1.0, 1.0) if clipped else x), clipped


def _encoded(x: np.ndarray, subtype: str | None) -> np.ndarray:
    """(N, C) samples to hand to libsndfile: 16-bit PCM rounded to nearest here.

    libsndfile turns float into 16-bit PCM by flooring (measured: 5.6 and 5.999 LSB are
    written as 5, -5.001 as -6), a bias of half a step; rounding ourselves keeps a file that
    was read as float and written back unchanged.
    """
    if subtype is not None and subtype.upper() == "PCM_16":
        return np.clip(np.rint(x.T * 32768.0), -32768, 32767).astype(np.int16)
    return np.ascontiguousarray(x.T)


def as_written(x: np.ndarray, subtype: str, format: str) -> np.ndarray:
    """The samples a file written by `write_audio` with this format and subtype reads back as.

    Clipping and quantization exactly as the file would hold them (written to memory with
    libsndfile and read back), so a score of this array is the score of that file.

    Shape: (C, N) float32 -> (C, N) float32.
    """
    x, _ = _clip_for(np.asarray(x, dtype=np.float32), subtype)
    buffer = io.BytesIO()
    sf.write(buffer, _encoded(x, subtype), SAMPLE_RATE, subtype=subtype, format=format)
    buffer.seek(0)
    return sf.read(buffer, dtype="float32", always_2d=True)[0].T


def _format_from_suffix(path: Path) -> str | None:
    """soundfile's format name for an extension ('.wav' -> 'WAV'), None when unknown."""
    fmt = path.suffix.lstrip(".").upper()
    return fmt if fmt in sf.available_formats() else None
