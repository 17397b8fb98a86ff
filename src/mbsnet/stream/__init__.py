"""Real-time streaming of causal models: one hop in, one hop out, exactly the offline output.

`StreamStep` is the pure function of one hop (also what `mbsnet export --streaming` records as
a stateful ONNX graph); `Streamer` feeds it blocks of any size and keeps its states.
"""

from mbsnet.stream.step import STATE_NAMES, StreamStep
from mbsnet.stream.streamer import Streamer

__all__ = ["STATE_NAMES", "StreamStep", "Streamer"]
