"""PyTorch vs onnxruntime on this CPU: real-time factors, their ratios, float16, top ops.

Run: .venv/bin/python benchmarks/bench_onnx.py [--presets tiny base] [--repeats 5] [--profile]
     .venv/bin/python benchmarks/bench_onnx.py --quick      (a few seconds: checks it runs)

Every figure comes from this run: each preset (random weights; speed does not depend on them)
is exported with `mbsnet.export` into a temporary folder, then PyTorch and onnxruntime
enhance the same input at 1 and 2 threads for 2, 10 and 60 s, taking turns in each of
--repeats rounds after a warm-up. RTF = seconds of compute per second of audio (median of the
rounds); ratio = PyTorch time / onnxruntime time, the median of the rounds' ratios.
Targets (issue 8): base at 10 s, 1 thread: ratio >= 1.5; base at 2 threads: onnxruntime
RTF < 0.10. --profile adds onnxruntime's profiler on base at 10 s and prints the top op types.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from mbsnet import SAMPLE_RATE
from mbsnet.enhance.torch_backend import TorchBackend
from mbsnet.export.fp16 import to_float16
from mbsnet.export.runtime import CPU, OnnxBackend
from mbsnet.export.writer import finish_graph, graph_metadata, record_graph
from mbsnet.models import create_model, preset_config

TARGET_RATIO_1T, TARGET_RTF_2T = 1.5, 0.10


def _export(preset: str, folder: Path) -> tuple[torch.nn.Module, Path, Path]:
    """(model, fp32 graph, fp16 graph) of a preset with random weights."""
    torch.manual_seed(0)
    model = create_model("mbsnet", preset_config(preset)).eval()
    proto = record_graph(model)
    paths = []
    for name, graph, precision in (("fp32", proto, "float32"), ("fp16", to_float16(proto),
                                                                 "float16")):
        path = folder / f"{preset}_{name}.onnx"
        path.write_bytes(finish_graph(graph, graph_metadata(model, "", precision))
                         .SerializeToString())
        paths.append(path)
    return model, paths[0], paths[1]


def _rtfs(backends, wave: np.ndarray, repeats: int) -> tuple[list[float], float]:
    """Median RTF of each backend, and the median over repeats of the first two's ratio.

    The backends take turns within each repeat (after one warm-up call each: allocations,
    onnxruntime's arena, oneDNN primitives), so a slow spell of the machine, which on this
    machine class can last seconds and move one backend's time by 1.5x, falls on all of them.
    """
    for backend in backends:
        backend(wave, wave)
    times: list[list[float]] = [[] for _ in backends]
    for _ in range(repeats):
        for backend, spent in zip(backends, times, strict=True):
            start = time.perf_counter()
            backend(wave, wave)
            spent.append(time.perf_counter() - start)
    seconds = wave.shape[-1] / SAMPLE_RATE
    ratio = statistics.median(t / o for t, o in zip(times[0], times[1], strict=True))
    return [statistics.median(spent) / seconds for spent in times], ratio


def _profile(path: Path, wave: np.ndarray, threads: int, top: int = 8) -> list[tuple[str, float]]:
    """(op type, share of kernel time) over warm onnxruntime runs, largest first.

    The first run is left out: it grows onnxruntime's arena, and its page faults land on
    whichever nodes allocate first (they made one layer's Pad look 60x slower than its twin's).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=[CPU])
    for _ in range(3):
        session.run(None, {"wave": wave, "reference": wave})
    trace = json.loads(Path(session.end_profiling()).read_text())
    warm_from = sorted(e["ts"] for e in trace if e.get("name") == "model_run")[1]
    totals: dict[str, float] = defaultdict(float)
    for event in trace:
        if (event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
                and event["ts"] >= warm_from):
            totals[event["args"]["op_name"]] += event["dur"]
    grand = sum(totals.values()) or 1.0
    return sorted(((op, t / grand) for op, t in totals.items()), key=lambda x: -x[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"])
    parser.add_argument("--seconds", nargs="+", type=float, default=[2.0, 10.0, 60.0])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="onnxruntime profile of base")
    parser.add_argument("--quick", action="store_true", help="tiny, 0.5 s, 1 thread, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.presets, args.seconds, args.threads, args.repeats = ["tiny"], [0.5], [1], 1
    rng = np.random.default_rng(0)
    rows = []
    header = f"{'preset':6} {'thr':>3} {'sec':>5} {'torch':>7} {'ort':>7} {'ratio':>6} {'fp16':>7}"
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            model, fp32, fp16 = _export(preset, Path(tmp))
            for threads in args.threads:
                torch.set_num_threads(threads)
                backends = (TorchBackend(model, "cpu"), OnnxBackend(fp32, "cpu", threads),
                            OnnxBackend(fp16, "cpu", threads))
                for seconds in args.seconds:
                    wave = (0.1 * rng.standard_normal((1, round(seconds * SAMPLE_RATE))))
                    wave = wave.astype(np.float32)
                    rtfs, ratio = _rtfs(backends, wave, args.repeats)
                    rows.append((preset, threads, seconds, *rtfs, ratio))
                    print(f"{preset:6} {threads:3d} {seconds:5g} {rtfs[0]:7.4f} {rtfs[1]:7.4f} "
                          f"{ratio:6.2f} {rtfs[2]:7.4f}", flush=True)
        print("\nRTF (lower is faster, median of the repeats); ratio = torch / ort (median of "
              "the repeats' ratios)\n" + header)
        for preset, threads, seconds, t, o, h, ratio in rows:
            print(f"{preset:6} {threads:3d} {seconds:5g} {t:7.4f} {o:7.4f} {ratio:6.2f} {h:7.4f}")
        by_key = {(r[0], r[1], r[2]): r for r in rows}
        if ("base", 1, 10.0) in by_key:
            ratio = by_key["base", 1, 10.0][-1]
            ok = "meets" if ratio >= TARGET_RATIO_1T else "misses"
            print(f"base 10 s 1 thread: ort {ratio:.2f}x faster ({ok} {TARGET_RATIO_1T}x)")
        for (preset, threads, seconds), row in by_key.items():
            if preset == "base" and threads == 2:
                ok = "meets" if row[4] < TARGET_RTF_2T else "misses"
                print(f"base {seconds:g} s 2 threads: ort RTF {row[4]:.4f} ({ok} {TARGET_RTF_2T})")
        if args.profile or args.quick:
            preset = "base" if "base" in args.presets else args.presets[0]
            seconds = 10.0 if not args.quick else args.seconds[0]
            _, fp32, _ = _export(preset, Path(tmp))
            wave = (0.1 * rng.standard_normal((1, round(seconds * SAMPLE_RATE)))).astype("f4")
            threads = max(args.threads)
            print(f"\nonnxruntime profile, {preset} {seconds:g} s, {threads} thread(s):")
            for op, share in _profile(fp32, wave, threads):
                print(f"  {op:24} {100 * share:5.1f}%")


if __name__ == "__main__":
    main()
