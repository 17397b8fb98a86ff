"""A streaming graph (`mbsnet export --streaming`) as a `mbsnet.stream.HopRunner` (no torch)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mbsnet.export.runtime import (
    CPU,
    RuntimeSetupError,
    check_sample_rate,
    open_graph,
    run_guarded,
    run_session,
)

HOP_INPUT = "hop"
OUTPUT_NAME = "enhanced"
NEXT_PREFIX = "next_"
"""Output names of the new states: next_analysis, next_level, ..."""


class BoundState:
    """A stream's states in two fixed sets of float32 buffers bound to the session (CPU).

    Each hop reads one set and writes the other (`run`), so nothing is allocated or converted
    per hop: onnxruntime's io_binding instead of `session.run` (measured: per-hop time 0.92x,
    identical output). `arrays` are the current states. Updated in place by every hop.

    Works for any stateful graph that takes (frame, *states) and returns (output, *next
    states): `frame` and `output` are (name, shape), `state_io` pairs each state input's name
    with the output that holds its next value, in the order of `arrays`.
    """

    def __init__(
        self,
        session: Any,
        arrays: Sequence[np.ndarray],
        frame: tuple[str, tuple[int, ...]],
        output: tuple[str, tuple[int, ...]],
        state_io: Sequence[tuple[str, str]],
    ) -> None:
        import onnxruntime as ort

        self.hop = np.zeros(frame[1], np.float32)
        self.out = np.zeros(output[1], np.float32)
        first = [np.array(a, dtype=np.float32, order="C") for a in arrays]
        self._sides = (first, [np.zeros_like(a) for a in first])
        values = [[ort.OrtValue.ortvalue_from_numpy(a) for a in side] for side in self._sides]
        hop_value = ort.OrtValue.ortvalue_from_numpy(self.hop)
        out_value = ort.OrtValue.ortvalue_from_numpy(self.out)
        self._bindings = []
        for side in (0, 1):
            binding = session.io_binding()
            binding.bind_ortvalue_input(frame[0], hop_value)
            binding.bind_ortvalue_output(output[0], out_value)
            for (name, next_name), now, after in zip(
                state_io, values[side], values[1 - side], strict=True
            ):
                binding.bind_ortvalue_input(name, now)
                binding.bind_ortvalue_output(next_name, after)
            self._bindings.append(binding)
        self._side = 0
        self._session = session

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(self._sides[self._side])

    def run(self, hop: np.ndarray) -> np.ndarray:
        """One hop (the frame's shape) in, the output out (a new array)."""
        self.hop[...] = hop
        run_guarded(self._session.run_with_iobinding, self._bindings[self._side])
        self._side ^= 1
        return self.out.copy()


class OnnxHopRunner:
    """One hop of a streaming graph in onnxruntime.

    The state names and shapes come from the graph's metadata_props ("states", in input order,
    with "batch" for the number of channels), so only graphs written by `mbsnet export
    --streaming` are accepted. On the CPU provider a stream's state is a `BoundState`, updated
    in place by each hop (use the state returned); elsewhere a tuple of float32 arrays.
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

    def initial_state(self, channels: int) -> BoundState | tuple[np.ndarray, ...]:
        """Zeros of the documented shapes, `batch` = channels."""
        zeros = tuple(
            np.zeros([channels if d == "batch" else d for d in self.state_shapes[name]], np.float32)
            for name in self.state_names
        )
        if self.provider != CPU:
            return zeros
        frame = (channels, self.hop)
        state_io = [(name, NEXT_PREFIX + name) for name in self.state_names]
        return BoundState(self.session, zeros, (HOP_INPUT, frame), (OUTPUT_NAME, frame), state_io)

    def __call__(
        self, hop: np.ndarray, state: BoundState | tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, BoundState | tuple[np.ndarray, ...]]:
        if isinstance(state, BoundState):
            return state.run(hop), state
        feeds = {HOP_INPUT: hop, **dict(zip(self.state_names, state, strict=True))}
        out, *new_state = run_session(self.session, self.output_names, feeds)
        return out, tuple(new_state)
