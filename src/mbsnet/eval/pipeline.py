"""Evaluation runs: enhance each test file, score it in worker processes, never stop early.

The main process reads each pair, gets the enhanced signal from a `Source` (a model, a folder
of enhanced files, or the noisy input itself for the "noisy" row of paper tables) and hands
(clean, enhanced) to a process pool as soon as it is ready, so model inference and metrics
overlap; at most ``2 * workers`` submissions are in flight, which bounds memory on large sets.
Model inference runs on the whole file, as papers do; a file that runs out of memory is
retried in chunks and marked ``chunked``. Any problem with one file (damaged audio, wrong
rate, multichannel, model error) becomes a failed row with a one-line reason.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mbsnet import SAMPLE_RATE
from mbsnet.audio import AudioError, read_audio, resample
from mbsnet.enhance.chunking import enhance_waveform
from mbsnet.eval.metrics import EXTENDED_METRICS, METRICS, MetricResult, compute_metrics
from mbsnet.eval.pairs import Pair
from mbsnet.eval.report import EvalReport, Row

RETRY_CHUNK_SECONDS = 10.0
"""Chunk length for the out-of-memory retry and for files above ``max_seconds``."""
CHUNK_OVERLAP_SECONDS = 1.0
RESAMPLE_WARNING = (
    "audio not at 16 kHz was resampled with soxr: these scores are NOT comparable to published "
    "tables (resampling alone moved one published model's PESQ from 3.50 to 3.00)"
)
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "failed to allocate")
_OOM_TYPES = tuple(
    t for t in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError, MemoryError)
    if t is not None
)

Log = Callable[[str], None]


class EvalError(Exception):
    """A problem with one test file that fails its row; the message is one line."""


@dataclass
class Enhanced:
    """A source's output: (1, N) float32 audio at `samplerate` and how it was made."""

    audio: np.ndarray
    samplerate: int = SAMPLE_RATE
    chunked: bool = False


class Source(Protocol):
    """Where enhanced audio comes from; an ONNX model can be one more implementation."""

    description: str

    def enhance(self, pair: Pair, noisy: np.ndarray) -> Enhanced:
        """Enhanced audio for `pair`, given its noisy audio as (1, N) float32 at 16 kHz."""
        ...


class NoisySource:
    """The unprocessed input: the "noisy" row of published tables."""

    description = "noisy (unprocessed input)"

    def enhance(self, pair: Pair, noisy: np.ndarray) -> Enhanced:
        return Enhanced(noisy)


class FolderSource:
    """Enhanced files under a folder, by the same relative names as the noisy files."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.description = f"enhanced files in {self.folder}"

    def enhance(self, pair: Pair, noisy: np.ndarray) -> Enhanced:
        path = self.folder / pair.name
        if not path.is_file():
            raise EvalError(f"no enhanced file {pair.name} in {self.folder}")
        audio, info = read_audio(path)
        return Enhanced(audio, samplerate=info.samplerate)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch/CUDA/Python out-of-memory errors, including allocator RuntimeErrors."""
    if isinstance(exc, _OOM_TYPES):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MESSAGES)


class ModelSource:
    """A PyTorch model run on the whole file (chunked only above `max_seconds` or after OOM)."""

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device | None = None,
        max_seconds: float | None = None,
        description: str | None = None,
    ) -> None:
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.max_seconds = max_seconds
        self.description = description or f"model {getattr(model, 'ARCH', type(model).__name__)}"

    def _run(self, noisy: np.ndarray, chunk_seconds: float | None) -> np.ndarray:
        wave = torch.from_numpy(np.ascontiguousarray(noisy))
        return enhance_waveform(
            self.model, wave, chunk_seconds=chunk_seconds,
            overlap_seconds=CHUNK_OVERLAP_SECONDS, device=self.device,
        ).numpy()

    def enhance(self, pair: Pair, noisy: np.ndarray) -> Enhanced:
        n = noisy.shape[-1]
        chunk = None
        if self.max_seconds is not None and n > self.max_seconds * SAMPLE_RATE:
            chunk = min(RETRY_CHUNK_SECONDS, self.max_seconds)
        out_of_memory = False
        try:
            audio = self._run(noisy, chunk)
        except Exception as exc:
            if chunk is not None or not is_out_of_memory(exc):
                raise
            out_of_memory = True  # retried below, outside this block: the traceback holds tensors
        if out_of_memory:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            chunk = max(1.0, min(RETRY_CHUNK_SECONDS, n / SAMPLE_RATE / 2))
            try:
                audio = self._run(noisy, chunk)
            except Exception as exc:
                if is_out_of_memory(exc):
                    raise EvalError(f"out of memory, even in chunks of {chunk:.1f} s") from exc
                raise
        return Enhanced(audio, chunked=chunk is not None and n > round(chunk * SAMPLE_RATE))


def make_source(
    source: Source | nn.Module | str | os.PathLike[str] | None,
    *,
    device: str | torch.device | None = None,
    max_seconds: float | None = None,
) -> Source:
    """A `Source` from a model, a folder of enhanced files, None (noisy), or a Source itself.

    Raises:
        ValueError: `device` or `max_seconds` given for a source that is not a model.
    """
    if isinstance(source, nn.Module):
        return ModelSource(source, device=device, max_seconds=max_seconds)
    if device is not None or max_seconds is not None:
        raise ValueError("device and max_seconds apply to a model source only")
    if source is None:
        return NoisySource()
    if isinstance(source, str | os.PathLike):
        return FolderSource(source)
    return source


def _mono(audio: np.ndarray, what: str) -> np.ndarray:
    if audio.shape[0] != 1:
        raise EvalError(f"{what} has {audio.shape[0]} channels; eval scores mono files, as papers do")
    return audio


def _to_16k(audio: np.ndarray, rate: int, allow: bool, what: str) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return audio
    if not allow:
        raise EvalError(
            f"{what} is at {rate} Hz; metrics are defined at {SAMPLE_RATE} Hz "
            "(--resample converts it, but scores are then not comparable to published tables)"
        )
    return resample(audio, rate, SAMPLE_RATE)


@dataclass
class Prepared:
    """16 kHz mono signals of one pair, ready to score or plot; each (N,) float32."""

    noisy: np.ndarray
    clean: np.ndarray
    enhanced: np.ndarray
    resampled: bool


def prepare_pair(pair: Pair, source: Source, allow_resample: bool, row: Row | None = None) -> Prepared:
    """Read, check and enhance one pair; fills ``row.duration`` / ``row.chunked`` as known.

    Raises:
        AudioError: a damaged file. EvalError: wrong rate, channels or length, missing
        enhanced file. Anything the source raises (e.g. a model error).
    """
    row = row if row is not None else Row(pair.name)
    noisy, noisy_info = read_audio(pair.noisy)
    row.duration = noisy_info.frames / noisy_info.samplerate
    clean, clean_info = read_audio(pair.clean)
    _mono(noisy, "noisy file"), _mono(clean, "clean file")
    if noisy_info.samplerate != clean_info.samplerate:
        raise EvalError(
            f"noisy is at {noisy_info.samplerate} Hz but clean at {clean_info.samplerate} Hz"
        )
    if noisy_info.frames != clean_info.frames:
        raise EvalError(
            f"length mismatch: noisy has {noisy_info.frames} frames, clean {clean_info.frames}"
        )
    noisy = _to_16k(noisy, noisy_info.samplerate, allow_resample, "the pair")
    clean = _to_16k(clean, clean_info.samplerate, allow_resample, "the pair")
    out = source.enhance(pair, noisy)
    row.chunked = out.chunked
    enhanced = _mono(_to_16k(out.audio, out.samplerate, allow_resample, "enhanced"), "enhanced")
    if enhanced.shape != noisy.shape:
        raise EvalError(
            f"enhanced has {enhanced.shape[-1]} samples at 16 kHz, noisy {noisy.shape[-1]}"
        )
    if not np.isfinite(enhanced).all():
        raise EvalError("enhanced audio contains NaN or Inf samples")
    resampled = SAMPLE_RATE not in (noisy_info.samplerate, out.samplerate)
    return Prepared(noisy[0], clean[0], enhanced[0].astype(np.float32), resampled)


def _describe(exc: BaseException) -> str:
    """One line for a failed row: library errors as is, others with their type."""
    if isinstance(exc, EvalError | AudioError):
        text = str(exc)
    elif is_out_of_memory(exc):
        text = f"out of memory: {exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:500]
