"""`Streamer`: blocks of any size in, the enhanced samples that are final out (numpy only)."""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from mbsnet.enhance.backend import is_torch_module

STATE_NAMES = ("analysis", "level", "taps", "synthesis", "conv", "ssm")
"""A causal model's states, in the order its one-hop step takes and returns them (see
`mbsnet.stream.step.StreamState` for their shapes and meaning)."""


class HopRunner(Protocol):
    """One hop of a causal model: PyTorch (`TorchHopRunner`) or onnxruntime (`OnnxHopRunner`).

    Attributes: hop (samples per step), delay (samples by which the output lags the input),
    description (one line naming the model and where it runs).
    """

    hop: int
    delay: int
    description: str

    def initial_state(self, channels: int) -> Any:
        """The state before a stream's first sample, for `channels` streams side by side."""
        ...

    def __call__(self, hop: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        """Shape: hop (channels, hop) float32 -> (enhanced hop (channels, hop), new state)."""
        ...


def as_hop_runner(model: Any) -> HopRunner:
    """A causal PyTorch model wrapped as a `HopRunner`; a runner is returned as it is."""
    if is_torch_module(model):
        from mbsnet.stream.torch_runner import TorchHopRunner

        return TorchHopRunner(model)
    return model


class Streamer:
    """Enhance a stream with a causal model, hop by hop; its output equals the offline one.

    `push(samples)` takes any number of samples (a partial hop waits for the rest) and returns
    the enhanced samples that are final: the stream lags by `delay` samples plus what waits in
    a partial hop. `flush()` ends the stream and returns the rest, so everything returned,
    concatenated, is the model's offline output on the whole input, sample for sample (to
    float rounding). After `flush` the streamer starts a new stream.

    model: a causal PyTorch model (e.g. preset tiny-causal) or a `HopRunner`.
    Input and output are float32 arrays, (n,) for one channel or (C, n) for C channels
    streamed together. `hop_seconds` holds the compute time of every hop so far.
    """

    def __init__(self, model: Any, channels: int = 1) -> None:
        self.runner = as_hop_runner(model)
        self.channels = channels
        self.hop = self.runner.hop
        self.delay = self.runner.delay
        self.hop_seconds: list[float] = []
        self.reset()

    def reset(self) -> None:
        """Forget the stream: silence before the next sample, as at the start."""
        self.state = self.runner.initial_state(self.channels)
        self._pending = np.zeros((self.channels, 0), np.float32)
        self._to_drop = self.delay  # outputs that fall before the stream's start
        self._received = 0
        self._returned = 0

    def _as_block(self, samples: np.ndarray) -> tuple[np.ndarray, bool]:
        block = np.asarray(samples, dtype=np.float32)
        mono = block.ndim == 1
        block = block[None] if mono else block
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(
                f"expected ({self.channels}, n) samples (or (n,) for one channel), "
                f"got shape {np.shape(samples)}"
            )
        return block, mono

    def _run_hops(self, block: np.ndarray) -> np.ndarray:
        """Run every whole hop of `block`; return the outputs after the start-up drop."""
        outputs = []
        for start in range(0, block.shape[1] - self.hop + 1, self.hop):
            x = np.ascontiguousarray(block[:, start : start + self.hop])
            began = time.perf_counter()
            out, self.state = self.runner(x, self.state)
            self.hop_seconds.append(time.perf_counter() - began)
            outputs.append(out)
        out = np.concatenate(outputs, axis=1) if outputs else block[:, :0]
        drop = min(self._to_drop, out.shape[1])
        self._to_drop -= drop
        return out[:, drop:]

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Feed samples; returns the enhanced samples that are final (possibly none)."""
        block, mono = self._as_block(samples)
        self._received += block.shape[1]
        block = np.concatenate([self._pending, block], axis=1)
        whole = block.shape[1] // self.hop * self.hop
        self._pending = block[:, whole:]
        out = self._run_hops(block[:, :whole])
        self._returned += out.shape[1]
        return out[0] if mono else out

    def flush(self, mono: bool | None = None) -> np.ndarray:
        """End the stream: pad with silence until every input sample is final; return the rest.

        mono: shape of the result, (n,) or (C, n); default: (n,) for one channel.
        """
        owed = self._received - self._returned
        zeros = (-self._pending.shape[1]) % self.hop + self.delay
        tail = np.concatenate([self._pending, np.zeros((self.channels, zeros), np.float32)], 1)
        out = self._run_hops(tail)[:, :owed]
        self.reset()
        single = self.channels == 1 if mono is None else mono
        return out[0] if single else out
