"""`Streamer`: a causal model fed blocks of any size, giving back what is final so far."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from mbsnet.models import model_device
from mbsnet.stream.step import StreamState, StreamStep


class Streamer:
    """Enhance a stream hop by hop with a causal model; its output equals the offline one.

    `push(samples)` takes any number of samples (a partial hop waits for the rest) and returns
    the enhanced samples that are final: the stream lags by `delay` samples plus what is
    waiting in a partial hop. `flush()` ends the stream and returns the rest, so the
    concatenation of everything returned is the model's offline output on the whole input,
    sample for sample (to float rounding). After `flush` the streamer starts a new stream.

    Input and output are float32 numpy arrays, (n,) for one channel or (C, n) for C channels
    streamed together. `hop_seconds` holds the compute time of every hop so far.
    """

    def __init__(self, model: nn.Module, channels: int = 1) -> None:
        self.step = StreamStep(model.eval()).eval()
        self.device = model_device(model)
        self.channels = channels
        self.hop = self.step.hop
        self.delay = self.step.model.stream_delay
        self.hop_seconds: list[float] = []
        self.reset()

    def reset(self) -> None:
        """Forget the stream: silence before the next sample, as at the start."""
        self.state: StreamState = self.step.initial_state(self.channels)
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

    @torch.inference_mode()
    def _run_hops(self, block: np.ndarray) -> np.ndarray:
        """Run every whole hop of `block`; return the outputs after the start-up drop."""
        hops = block.shape[1] // self.hop
        outputs = []
        for index in range(hops):
            x = torch.from_numpy(block[:, index * self.hop : (index + 1) * self.hop])
            start = time.perf_counter()
            out, *state = self.step(x.to(self.device), *self.state)
            out = out.cpu().numpy()
            self.hop_seconds.append(time.perf_counter() - start)
            self.state = StreamState(*state)
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
        self._pending = tail[:, :0]
        out = self._run_hops(tail)[:, :owed]
        self.reset()
        single = self.channels == 1 if mono is None else mono
        return out[0] if single else out
