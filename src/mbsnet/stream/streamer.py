"""`Streamer`: blocks of any size in, the enhanced samples that are final out (numpy only)."""

from __future__ import annotations

import collections
import time
from typing import Any, Protocol

import numpy as np

from mbsnet.enhance.backend import is_torch_module

HOP_TIMES_KEPT = 100_000
"""`Streamer.hop_seconds` keeps the compute times of this many most recent hops (13 min)."""


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
        """Shape: hop (channels, hop) float32 -> (enhanced hop (channels, hop), new state).

        A runner may update `state` in place and return it: callers use only the state returned.
        """
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
    float rounding). After `flush` the streamer starts a new stream (`reset` does so at once).

    model: a causal PyTorch model (e.g. preset tiny-causal) or a `HopRunner`.
    Input and output are float32 arrays, (n,) for one channel or (C, n) for C channels
    streamed together; `flush` answers in the form of the last `push`. Samples must be finite
    (ValueError otherwise: one NaN would poison the running level and the states for good). If
    the runner fails, the stream is reset and the error re-raised. `hop_seconds` holds the
    compute times of the last HOP_TIMES_KEPT hops.
    """

    def __init__(self, model: Any, channels: int = 1) -> None:
        self.runner = as_hop_runner(model)
        self.channels = channels
        self.hop = self.runner.hop
        self.delay = self.runner.delay
        self.hop_seconds: collections.deque[float] = collections.deque(maxlen=HOP_TIMES_KEPT)
        self.reset()

    def reset(self) -> None:
        """Forget the stream (silence before the next sample, as at the start) and the timings."""
        self._restart()
        self.hop_seconds.clear()

    def _restart(self) -> None:
        """A new stream from silence; the hop timings are kept."""
        self.state = self.runner.initial_state(self.channels)
        self._pending = np.zeros((self.channels, 0), np.float32)
        self._to_drop = self.delay  # outputs that fall before the stream's start
        self._received = 0
        self._returned = 0
        self._mono = self.channels == 1

    def _as_block(self, samples: np.ndarray) -> tuple[np.ndarray, bool]:
        block = np.asarray(samples, dtype=np.float32)
        mono = block.ndim == 1
        block = block[None] if mono else block
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(
                f"expected ({self.channels}, n) samples (or (n,) for one channel), "
                f"got shape {np.shape(samples)}"
            )
        if not np.isfinite(block).all():
            raise ValueError("samples contain NaN or Inf; the stream is unchanged")
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
        block, self._mono = self._as_block(samples)
        self._received += block.shape[1]
        block = np.concatenate([self._pending, block], axis=1)
        whole = block.shape[1] // self.hop * self.hop
        self._pending = block[:, whole:]
        out = self._guarded(block[:, :whole])
        self._returned += out.shape[1]
        return out[0] if self._mono else out

    def flush(self, mono: bool | None = None) -> np.ndarray:
        """End the stream: pad with silence until every input sample is final; return the rest.

        mono: shape of the result, (n,) or (C, n); default: the form of the last `push`.
        """
        if mono and self.channels > 1:
            raise ValueError(f"mono=True, but this stream has {self.channels} channels")
        single = self._mono if mono is None else mono
        owed = self._received - self._returned
        zeros = (-self._pending.shape[1]) % self.hop + self.delay
        tail = np.concatenate([self._pending, np.zeros((self.channels, zeros), np.float32)], 1)
        out = self._guarded(tail)[:, :owed]
        self._restart()
        return out[0] if single else out

    def _guarded(self, block: np.ndarray) -> np.ndarray:
        """`_run_hops`, resetting the stream if the runner fails (its state is then unknown)."""
        try:
            return self._run_hops(block)
        except Exception:
            self._restart()
            raise
