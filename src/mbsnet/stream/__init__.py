"""Real-time streaming of causal models: one hop in, one hop out, exactly the offline output.

`StreamStep` (torch) is the pure function of one hop, also what `mbsnet export --streaming`
records as a stateful ONNX graph. `Streamer` (numpy only) feeds blocks of any size to a hop
runner: a causal PyTorch model, or the streaming graph through onnxruntime.
"""

from __future__ import annotations

from typing import Any

from mbsnet.stream.streamer import HopRunner, Streamer

__all__ = ["HopRunner", "StreamStep", "Streamer"]


def __getattr__(name: str) -> Any:
    # StreamStep needs torch; importing it lazily keeps `Streamer` usable on onnxruntime alone.
    if name == "StreamStep":
        from mbsnet.stream.step import StreamStep

        return StreamStep
    raise AttributeError(f"module 'mbsnet.stream' has no attribute {name!r}")
