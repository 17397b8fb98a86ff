"""Streaming on one CPU thread: per-hop compute of the PyTorch Streamer and the streaming ONNX.

Run: .venv/bin/python benchmarks/bench_stream.py [--presets tiny-causal base-causal]
                                                  [--seconds 10] [--passes 5] [--profile]
                                                  [--peer PEER.onnx --peer-hop 256]
     .venv/bin/python benchmarks/bench_stream.py --quick      (a few seconds: checks it runs)

Every figure comes from this run. Each causal preset (random weights; speed does not depend on
them) is exported with `mbsnet export --streaming`'s code into a temporary folder; then the
bundled example (repeated to --seconds) is streamed hop by hop through `mbsnet.stream.Streamer`
with the PyTorch step and with onnxruntime (intra-op threads 1, torch threads 1), after a
warm-up of 50 hops, in --passes passes (the runtimes taking turns, so a slow spell of the
machine falls on both). Per hop, over all passes: median and 99th-percentile compute in ms and
the share of hops over the real-time budget (one hop: 8 ms at hop 128); RTF (mean compute /
hop duration) is the median over the passes, with their range beside it (on this machine class
one pass's RTF was seen to vary by 1.5x from the next).
Targets (issue 10): tiny-causal streaming ONNX RTF <= 0.05 and p99 <= 2 ms (a quarter of the
hop). --profile adds onnxruntime's profiler on the first preset and prints its top op types.

Absolute RTF moves 2-4x between machines of this class, and the issue's peer figures come from
another run. --peer times another streaming ONNX in the same passes as a reference for the
machine's speed: any stateful graph whose input 0 is one frame and whose outputs 1.. are the
next values of inputs 1.. (GTCRN's stream/onnx_models/gtcrn_simple.onnx has this form; it is
not part of mbsnet, fetch it yourself). Its frames are random (speed does not depend on them)
and it times the graph only (GTCRN's STFT runs outside it); --peer-hop gives its hop in
samples at 16 kHz (GTCRN: 256) for its RTF.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soundfile as sf
import torch

from mbsnet import SAMPLE_RATE
from mbsnet.export.stream_runtime import BoundState, OnnxHopRunner
from mbsnet.export.streaming import record_stream_graph, stream_metadata
from mbsnet.export.writer import finish_graph
from mbsnet.models import count_parameters, create_model, preset_config
from mbsnet.stream import Streamer

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "noisy_p232_005.wav"
TARGET_RTF, TARGET_P99_SHARE = 0.05, 0.25
ISSUE_GTCRN_RTF = 0.040
"""GTCRN's streaming RTF on the run behind the target (issue 10): with --peer gtcrn_simple.onnx,
tiny-causal's RTF is also given scaled by the peer's speed in this run to that run."""
WARMUP_HOPS = 50


def _audio(seconds: float) -> np.ndarray:
    wave, rate = sf.read(EXAMPLE, dtype="float32")
    assert rate == SAMPLE_RATE
    n = round(seconds * rate)
    return np.tile(wave, -(-n // wave.size))[:n]


def _stream(runner, wave: np.ndarray) -> np.ndarray:
    """Per-hop compute seconds after the warm-up."""
    streamer = Streamer(runner)
    streamer.push(wave[: WARMUP_HOPS * streamer.hop])
    streamer.flush()
    streamer.hop_seconds.clear()
    for start in range(0, wave.size, streamer.hop):
        streamer.push(wave[start : start + streamer.hop])
    return np.array(streamer.hop_seconds)


class _PeerRunner:
    """A stateful ONNX graph stepped frame by frame, outputs 1.. fed back to inputs 1.., in a
    `BoundState` as mbsnet's own streaming graphs are."""

    def __init__(self, path: str) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        inputs, outputs = session.get_inputs(), session.get_outputs()
        shape = lambda arg: tuple(d if isinstance(d, int) else 1 for d in arg.shape)  # noqa: E731
        self.frame_shape = shape(inputs[0])
        self.state = BoundState(
            session,
            [np.zeros(shape(arg), np.float32) for arg in inputs[1:]],
            (inputs[0].name, self.frame_shape),
            (outputs[0].name, shape(outputs[0])),
            [(arg.name, out.name) for arg, out in zip(inputs[1:], outputs[1:], strict=True)],
        )

    def time_frames(self, n_frames: int) -> np.ndarray:
        """Per-frame compute seconds of n_frames random frames, after a warm-up."""
        rng = np.random.default_rng(0)
        frames = (0.1 * rng.standard_normal((n_frames, *self.frame_shape))).astype(np.float32)
        seconds = []
        for i, frame in enumerate(np.concatenate([frames[:WARMUP_HOPS], frames])):
            began = time.perf_counter()
            self.state.run(frame)
            if i >= WARMUP_HOPS:
                seconds.append(time.perf_counter() - began)
        return np.array(seconds)


def _row(preset: str, runtime: str, passes: list[np.ndarray], hop: int) -> dict:
    budget = hop / SAMPLE_RATE
    seconds = np.concatenate(passes)
    rtfs = [p.mean() / budget for p in passes]
    return {
        "preset": preset,
        "runtime": runtime,
        "hops": int(seconds.size),
        "median_ms": float(np.median(seconds) * 1e3),
        "p99_ms": float(np.percentile(seconds, 99) * 1e3),
        "rtf": float(np.median(rtfs)),
        "rtf_range": (float(min(rtfs)), float(max(rtfs))),
        "over_budget": float(np.mean(seconds > budget)),
    }


def _profile(path: Path, wave: np.ndarray) -> list[tuple[str, float]]:
    """Top op types by kernel time; the profiler's file goes beside `path` (a temp folder)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    runner = OnnxHopRunner(path, device="cpu", threads=1)
    runner.session = session
    _stream(runner, wave)
    profile = Path(session.end_profiling())
    trace = json.loads(profile.read_text())
    profile.unlink()
    by_op: dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"]
    total = sum(by_op.values())
    return sorted(((op, dur / total) for op, dur in by_op.items()), key=lambda x: -x[1])[:8]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny-causal", "base-causal"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--peer", help="another streaming ONNX, timed as a speed reference")
    parser.add_argument("--peer-hop", type=int, default=256, help="the peer's hop (samples)")
    parser.add_argument("--quick", action="store_true", help="tiny-causal, 1 s")
    args = parser.parse_args()
    presets, seconds = (["tiny-causal"], 1.0) if args.quick else (args.presets, args.seconds)
    n_passes = 1 if args.quick else args.passes
    torch.set_num_threads(1)
    wave = _audio(seconds)
    peer = _PeerRunner(args.peer) if args.peer else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            torch.manual_seed(0)
            model = create_model("mbsnet", preset_config(preset)).eval()
            path = Path(tmp) / f"{preset}_stream.onnx"
            proto = finish_graph(record_stream_graph(model), stream_metadata(model, ""))
            path.write_bytes(proto.SerializeToString())
            hop = model.stft.hop
            print(f"{preset}: {count_parameters(model):,} parameters, hop {hop}, "
                  f"latency {1000 * model.latency_samples / SAMPLE_RATE:g} ms")  # fmt: skip
            onnx_runner = OnnxHopRunner(path, device="cpu", threads=1)
            passes: dict[str, list[np.ndarray]] = {"pytorch": [], "onnxruntime": []}
            peer_passes: list[np.ndarray] = []
            for _ in range(n_passes):
                passes["pytorch"].append(_stream(model, wave))
                passes["onnxruntime"].append(_stream(onnx_runner, wave))
                if peer is not None:
                    peer_passes.append(peer.time_frames(wave.size // args.peer_hop))
            rows += [_row(preset, runtime, times, hop) for runtime, times in passes.items()]
            if peer_passes:
                name = Path(args.peer).stem
                rows.append(_row(f"peer:{preset}", name, peer_passes, args.peer_hop))
            if args.profile and preset == presets[0]:
                for op, share in _profile(path, wave):
                    print(f"  ort op {op:<20} {share:6.1%}")
    print(f"\n{'preset':<16} {'runtime':<12} {'hops':>5} {'median ms':>10} {'p99 ms':>8} "
          f"{'RTF':>7} {'RTF range':>13} {'over budget':>12}")  # fmt: skip
    for r in rows:
        print(f"{r['preset']:<16} {r['runtime']:<12} {r['hops']:>5} {r['median_ms']:>10.3f} "
              f"{r['p99_ms']:>8.3f} {r['rtf']:>7.3f} "
              f"{r['rtf_range'][0]:>6.3f}-{r['rtf_range'][1]:<6.3f} "
              f"{r['over_budget']:>12.1%}")  # fmt: skip
    budget_ms = 1000 * hop / SAMPLE_RATE
    tiny = {r["runtime"]: r for r in rows if r["preset"] == "tiny-causal"}
    if "onnxruntime" in tiny:
        t = tiny["onnxruntime"]
        print(f"\ntarget: tiny-causal ONNX RTF <= {TARGET_RTF}: {t['rtf']:.3f} "
              f"({'met' if t['rtf'] <= TARGET_RTF else 'MISSED'}); p99 <= "
              f"{TARGET_P99_SHARE * budget_ms:g} ms: {t['p99_ms']:.3f} ms "
              f"({'met' if t['p99_ms'] <= TARGET_P99_SHARE * budget_ms else 'MISSED'})")
        speedup = tiny["pytorch"]["rtf"] / t["rtf"]
        print(f"tiny-causal: onnxruntime is {speedup:.2f}x the PyTorch streamer's speed")
        peer_row = next((r for r in rows if r["preset"] == "peer:tiny-causal"), None)
        if peer_row is not None:
            ratio = t["rtf"] / peer_row["rtf"]
            scaled = ratio * ISSUE_GTCRN_RTF
            print(f"peer {peer_row['runtime']} in the same passes: RTF {peer_row['rtf']:.3f}; "
                  f"tiny-causal ONNX / peer: {ratio:.2f}; on the run where GTCRN took "
                  f"{ISSUE_GTCRN_RTF} (if the peer is GTCRN): {scaled:.3f} "
                  f"({'met' if scaled <= TARGET_RTF else 'MISSED'})")  # fmt: skip


if __name__ == "__main__":
    main()
