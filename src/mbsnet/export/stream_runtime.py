"""A streaming graph (`mbsnet export --streaming`) as a `mbsnet.stream.HopRunner` (no torch)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mbsnet.export.runtime import RuntimeSetupError, check_sample_rate, open_graph, run_session

HOP_INPUT = "hop"
OUTPUT_NAME = "enhanced"
NEXT_PREFIX = "next_"
"""Output names of the new states: next_analysis, next_level, ..."""


class OnnxHopRunner:
    """One hop of a streaming graph in onnxruntime; the states are plain float32 arrays.

    The state names and shapes come from the graph's metadata_props ("states", in input order,
    with "batch" for the number of channels), so only graphs written by `mbsnet export
    --streaming` are accepted.
    """

    def __init__(
        self, path: str | os.PathLike[str], device: str = "auto", threads: int | None = None
    ) -> None:
        self.path = Path(path)
        opened, meta, names = open_graph(self.path, device, threads)
        self.session, self.provider = opened.session, opened.provider
        try:
            self.state_shapes = json.loads(meta["states"]) if "states" in meta else {}
        except ValueError:
            self.state_shapes = {}
        self.state_names = tuple(self.state_shapes)
        if (
            meta.get("streaming") != "true"
            or not self.state_names
            or names != (HOP_INPUT, *self.state_names)
        ):
            raise RuntimeSetupError(
                f"{self.path}: not a streaming graph written by mbsnet export --streaming "
                f"(inputs {', '.join(names)})"
            )
        check_sample_rate(self.path, meta)
        self.metadata = meta
        self.hop = int(meta["hop"])
        self.delay = int(meta["stream_delay"])
        self.output_names = [OUTPUT_NAME, *(NEXT_PREFIX + name for name in self.state_names)]
        self.description = f"ONNX {meta.get('arch', 'model')} (streaming) on {self.provider}"

    def initial_state(self, channels: int) -> tuple[np.ndarray, ...]:
        """Zeros of the documented shapes, `batch` = channels."""
        return tuple(
            np.zeros([channels if d == "batch" else d for d in self.state_shapes[name]], np.float32)
            for name in self.state_names
        )

    def __call__(
        self, hop: np.ndarray, state: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        feeds = {HOP_INPUT: hop, **dict(zip(self.state_names, state, strict=True))}
        out, *new_state = run_session(self.session, self.output_names, feeds)
        return out, tuple(new_state)
