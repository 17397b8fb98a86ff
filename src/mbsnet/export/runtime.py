"""onnxruntime sessions for exported graphs: provider choice that checks what really runs.

No torch here: `mbsnet enhance --onnx` and `mbsnet eval --onnx` run on numpy and onnxruntime.

onnxruntime-gpu falls back to the CPU silently when the CUDA or cuDNN libraries are missing: no
exception, no Python warning, only lines on stderr. So the providers a session *got* are read
back with `get_providers()`, and onnxruntime's stderr during session creation is captured to
name what is missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mbsnet import SAMPLE_RATE
from mbsnet.enhance.backend import is_out_of_memory

DEVICES = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
INPUT_NAMES = ("wave", "reference")
OUTPUT_NAME = "enhanced"


class RuntimeSetupError(Exception):
    """No usable session: missing onnxruntime, a bad graph file, or an unusable provider.

    `str()` is one line.
    """


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Collect what native code writes to file descriptor 2 inside the block."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


def _cuda_failure(stderr: list[str]) -> str:
    """What onnxruntime said about the CUDA provider, condensed to one line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(stderr))
    found = [
        f"cannot load {match.group(1)}"
        for match in re.finditer(r"with error: (\S+): cannot open shared object file", text)
    ]
    found += [
        f"onnxruntime needs cuDNN {m.group(1)} and CUDA {m.group(2)}"
        for m in re.finditer(r"Require cuDNN (\S+) and CUDA (\S+?)\.?(?:\s|$)", text)
    ]
    if not found:
        found = [line.strip() for line in text.splitlines() if "CUDA" in line][:1]
    return "; ".join(dict.fromkeys(found)) or "no reason given by onnxruntime"


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise RuntimeSetupError(
            f"onnxruntime is not installed ({err}); install it with pip install 'mbsnet[export]'"
        ) from None
    return onnxruntime


@dataclass
class Session:
    """An onnxruntime session and the provider that actually runs it."""

    session: Any
    provider: str
    note: str = ""
    """Why a requested provider is not the one running (empty when it is)."""


def create_session(path: str | os.PathLike[str], device: str = "auto",
                   threads: int | None = None) -> Session:
    """Open `path` with onnxruntime on `device` ("auto", "cpu" or "cuda").

    "auto" takes the CUDA provider when it really loads, the CPU otherwise. `threads` sets
    onnxruntime's intra-op threads (None: its default, one per core).

    Raises:
        RuntimeSetupError: onnxruntime missing, the file missing or not a loadable graph, or
            ``device="cuda"`` without a working CUDA provider (naming what is missing).
    """
    if device not in DEVICES:
        raise RuntimeSetupError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    path = Path(path)
    if not path.is_file():
        raise RuntimeSetupError(f"{path}: {'is a directory' if path.is_dir() else 'not found'}")
    ort = _import_onnxruntime()
    available = ort.get_available_providers()
    if device == "cuda" and CUDA not in available:
        raise RuntimeSetupError(
            f"--device cuda: this onnxruntime {ort.__version__} has no CUDA execution provider "
            f"(it has {', '.join(available)}); install onnxruntime-gpu"
        )
    wanted = [CUDA, CPU] if device != "cpu" and CUDA in available else [CPU]
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        with _captured_stderr() as stderr:
            session = ort.InferenceSession(str(path), options, providers=wanted)
    except Exception as err:  # onnxruntime's own exception classes (Fail, InvalidGraph, ...)
        reason = " ".join(str(err).split())[:300]
        raise RuntimeSetupError(f"{path}: not a loadable ONNX graph ({reason})") from None
    running = session.get_providers()
    note = ""
    if CUDA in wanted and CUDA not in running:
        note = f"CUDA provider did not load: {_cuda_failure(stderr)}"
        if device == "cuda":
            raise RuntimeSetupError(f"--device cuda: onnxruntime's {note}")
    return Session(session, running[0], note)


def open_graph(
    path: Path, device: str, threads: int | None
) -> tuple[Session, dict[str, str], tuple[str, ...]]:
    """(session, metadata_props, input names) of a graph file; see `create_session`."""
    opened = create_session(path, device, threads)
    meta = dict(opened.session.get_modelmeta().custom_metadata_map)
    return opened, meta, tuple(i.name for i in opened.session.get_inputs())


def check_sample_rate(path: Path, meta: dict[str, str]) -> None:
    """RuntimeSetupError unless the graph's metadata says it runs at SAMPLE_RATE."""
    if int(meta.get("sample_rate", 0)) != SAMPLE_RATE:
        raise RuntimeSetupError(
            f"{path}: graph runs at {meta.get('sample_rate')} Hz, not {SAMPLE_RATE}"
        )


def run_session(session: Any, outputs: list[str] | None, feeds: dict[str, np.ndarray]) -> list:
    """`session.run`, its errors as RuntimeError (see `run_guarded`)."""
    return run_guarded(session.run, outputs, feeds)


def run_guarded(call: Any, *args: Any) -> Any:
    """`call(*args)` of onnxruntime, its errors as RuntimeError (out-of-memory ones as they are):
    onnxruntime's own exceptions are not RuntimeErrors, and the file loops catch those per file."""
    try:
        return call(*args)
    except Exception as error:
        if is_out_of_memory(error):
            raise
        raise RuntimeError(f"onnxruntime: {error}") from error


class OnnxBackend:
    """An exported mbsnet graph as a `mbsnet.enhance.backend.Backend`.

    Reads min_samples, hop and the sample rate from the graph's metadata_props (written by
    `mbsnet export`), so a graph from any other source is refused up front.
    """

    def __init__(self, path: str | os.PathLike[str], device: str = "auto",
                 threads: int | None = None) -> None:
        self.path = Path(path)
        opened, meta, names = open_graph(self.path, device, threads)
        self.session, self.provider, self.note = opened.session, opened.provider, opened.note
        # A causal model's graph has no `reference`: its level is its own running estimate.
        if meta.get("streaming") == "true":
            raise RuntimeSetupError(
                f"{self.path}: a streaming graph (mbsnet export --streaming); run it with "
                "mbsnet enhance --stream (and score its output with mbsnet eval --enhanced-dir)"
            )
        if names not in (INPUT_NAMES, INPUT_NAMES[:1]) or "min_samples" not in meta:
            raise RuntimeSetupError(
                f"{self.path}: not a graph written by mbsnet export (inputs {', '.join(names)}; "
                f"expected {', '.join(INPUT_NAMES)} and mbsnet metadata)"
            )
        check_sample_rate(self.path, meta)
        self.metadata = meta
        self.uses_reference = names == INPUT_NAMES
        self.causal = not self.uses_reference  # never chunked (`enhance_array`)
        self.min_samples = int(meta["min_samples"])
        self.hop = int(meta["hop"])
        self.description = f"ONNX {meta.get('arch', 'model')} {self.path.name} on {self.provider}"

    def __call__(self, wave: np.ndarray, reference: np.ndarray) -> np.ndarray:
        feeds = {"wave": np.ascontiguousarray(wave, dtype=np.float32)}
        if self.uses_reference:
            feeds["reference"] = np.ascontiguousarray(reference, dtype=np.float32)
        return run_session(self.session, [OUTPUT_NAME], feeds)[0]

    def release_memory(self) -> None:
        """Nothing to do: onnxruntime keeps its arena, reused by the next (smaller) run."""
