"""Stream a 16 kHz wav file hop by hop through a streaming mbsnet graph (mbsnet export
--streaming): onnxruntime, numpy, soundfile only, as a real-time loop would run it.

    python onnx_stream.py model_stream.onnx noisy.wav enhanced.wav

The output is written as 32-bit float WAV, exactly what the graph produced.
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort
import soundfile as sf


def main(model_path: str, in_path: str, out_path: str) -> None:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one hop is too small to share between threads
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    hop, delay = int(meta["hop"]), int(meta["stream_delay"])
    audio, rate = sf.read(in_path, dtype="float32", always_2d=True)  # (samples, channels)
    if rate != int(meta["sample_rate"]):
        sys.exit(f"{in_path}: {rate} Hz; resample to {meta['sample_rate']} Hz first")
    wave = np.ascontiguousarray(audio.T)  # channels are streamed side by side (the batch)
    channels, n = wave.shape
    # The initial state is zeros of the documented shapes; "batch" is the number of channels.
    shapes = json.loads(meta["states"])
    state = {k: np.zeros([channels if d == "batch" else d for d in v], np.float32)
             for k, v in shapes.items()}  # fmt: skip
    state_inputs = [i.name for i in session.get_inputs()][1:]
    outputs = [o.name for o in session.get_outputs()]
    # Pad to whole hops, plus `delay` samples of silence so the last input samples come out.
    total = -(-n // hop) * hop + delay
    padded = np.zeros((channels, total), np.float32)
    padded[:, :n] = wave
    enhanced, seconds = [], []
    for start in range(0, total, hop):
        began = time.perf_counter()
        feeds = {"hop": padded[:, start : start + hop], **{k: state[k] for k in state_inputs}}
        out, *new_state = session.run(outputs, feeds)
        seconds.append(time.perf_counter() - began)
        state = dict(zip(state_inputs, new_state, strict=True))
        enhanced.append(out)
    # Output hop k is input hop k delayed by `delay` samples: drop what precedes the start.
    result = np.concatenate(enhanced, axis=1)[:, delay : delay + n]
    sf.write(out_path, result.T, rate, subtype="FLOAT")  # 32-bit float: the stream's values
    budget = hop / rate
    print(f"{len(seconds)} hops: median {np.median(seconds) * 1e3:.2f} ms, "
          f"p99 {np.percentile(seconds, 99) * 1e3:.2f} ms per {budget * 1e3:g} ms hop; "
          f"latency {meta['latency_ms']} ms")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
