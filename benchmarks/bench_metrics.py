"""Time the per-file metrics on the 25 VoiceBank+DEMAND test pairs (noisy vs clean).

Measures, in one run:
  (a) PESQ (wb) + STOI alone, one process: the floor (both are library code);
  (b) all six metrics via ``compute_metrics``, one process;
  (c) the same with a 2-worker process pool (forkserver where available, else spawn); pool
      start-up and imports are timed separately as warm-up.
  (d) with --startup: the whole command ``mbsnet eval --enhanced-dir E --workers 2`` on 200
      files (the 25 pairs linked 8 times under other names, the noisy files standing in as the
      enhanced ones), start-up included, against (a) on the same 200 files.
Targets: (b)/(a) <= 1.15, (b)/(c) >= 1.8 and (d)/(a x 200 files) <= 0.75 (issue 8: eval start-up
without torch). Each timing is the best of ``--repeats`` rounds,
with (a) and (b) alternating file by file so that load from other processes hits both alike.

Every process runs BLAS single-threaded (set below, before numpy loads, and inherited by the
workers): parallelism comes from worker processes, and multi-threaded BLAS on a busy 2-core
machine slows small matmuls (pystoi's and ours) several-fold.

    .venv/bin/python benchmarks/bench_metrics.py [--repeats 3]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import multiprocessing as mp  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from pesq import pesq  # noqa: E402
from pystoi import stoi  # noqa: E402

from mbsnet.eval import METRICS, compute_metrics  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
Pair = tuple[np.ndarray, np.ndarray]


def shared_data_dir() -> Path:
    env = os.environ.get("MBSNET_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def load_pairs(root: Path) -> list[Pair]:
    pairs = []
    for noisy_path in sorted((root / "vbd_test25" / "noisy").glob("*.wav")):
        clean, fs_c = sf.read(root / "vbd_test25" / "clean" / noisy_path.name)
        noisy, fs_n = sf.read(noisy_path)
        assert fs_c == fs_n == 16_000, noisy_path
        pairs.append((clean, noisy))
    return pairs


def pesq_and_stoi(clean: np.ndarray, noisy: np.ndarray) -> tuple[float, float]:
    return pesq(16_000, clean, noisy, "wb"), stoi(clean, noisy, 16_000, extended=False)


def run_serial(pairs: list[Pair]) -> tuple[dict[str, float], list]:
    """(a) and (b), alternating per file so that outside load hits both alike.

    Returns wall-clock and CPU seconds per measurement (keys a, b, a_cpu, b_cpu).
    """
    times = dict.fromkeys(("a", "b", "a_cpu", "b_cpu"), 0.0)
    results = []
    for clean, noisy in pairs:
        for key, work in (("a", pesq_and_stoi), ("b", compute_metrics)):
            wall, cpu = time.perf_counter(), time.process_time()
            out = work(clean, noisy)
            times[key] += time.perf_counter() - wall
            times[f"{key}_cpu"] += time.process_time() - cpu
        results.append(out)
    return times, results


def run_pool(pool: ProcessPoolExecutor, pairs: list[Pair]) -> tuple[float, list]:
    """(c): longest files first, so that no long file is left running alone at the end."""
    order = sorted(range(len(pairs)), key=lambda i: -pairs[i][0].size)
    start = time.perf_counter()
    futures = {i: pool.submit(compute_metrics, *pairs[i]) for i in order}
    out = [futures[i].result() for i in range(len(pairs))]
    return time.perf_counter() - start, out


STARTUP_FILES = 200


def run_startup(root: Path, workers: int) -> float:
    """(d): wall time of one `mbsnet eval --enhanced-dir` process over STARTUP_FILES files."""
    import shutil
    import subprocess
    import tempfile

    names = sorted(p.name for p in (root / "vbd_test25" / "noisy").glob("*.wav"))
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        for side, source in (("noisy", "noisy"), ("clean", "clean"), ("enhanced", "noisy")):
            (top / side).mkdir()
            for k in range(STARTUP_FILES):
                name = names[k % len(names)]
                target = root / "vbd_test25" / source / name
                (top / side / f"{k:03d}_{name}").symlink_to(target.resolve())
        mbsnet = shutil.which("mbsnet") or str(Path(sys.executable).with_name("mbsnet"))
        cmd = [mbsnet, "eval", "--noisy-dir", str(top / "noisy"), "--clean-dir",
               str(top / "clean"), "--enhanced-dir", str(top / "enhanced"), "--out",
               str(top / "report"), "--workers", str(workers), "--quiet"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--startup", action="store_true", help="also time (d)")
    args = parser.parse_args()

    root = shared_data_dir()
    if not (root / "vbd_test25").is_dir():
        print(f"skipped: vbd_test25 not found under {root} (set MBSNET_SHARED_DATA)")
        return 0
    pairs = load_pairs(root)
    seconds = sum(c.size for c, _ in pairs) / 16_000
    print(f"{len(pairs)} vbd_test25 pairs, {seconds:.1f} s of audio, {os.cpu_count()} CPUs")

    load = os.getloadavg()
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    start = time.perf_counter()
    pool = ProcessPoolExecutor(args.workers, mp_context=mp.get_context(method))
    # Start every worker and import the metrics stack there before timing anything.
    list(pool.map(compute_metrics, *zip(*pairs[: args.workers], strict=True)))
    warmup = time.perf_counter() - start

    best = dict.fromkeys(("a", "b", "c", "a_cpu", "b_cpu"), np.inf)
    with pool:
        for _ in range(args.repeats):
            times, serial = run_serial(pairs)
            times["c"], pooled = run_pool(pool, pairs)
            best = {key: min(best[key], times[key]) for key in best}
    assert [r.values for r in serial] == [r.values for r in pooled], "pool results differ"
    missing = sum(len(r.errors) for r in serial)

    n = len(METRICS)
    print(f"load average before: {load[0]:.2f}; best of {args.repeats} rounds")
    print(f"(a) PESQ + STOI, 1 process         : {best['a']:.3f} s  (CPU {best['a_cpu']:.3f} s)")
    print(
        f"(b) all {n} metrics, 1 process       : {best['b']:.3f} s  (CPU {best['b_cpu']:.3f} s)"
        f"  {missing} missing"
    )
    print(f"(c) all {n} metrics, {args.workers} workers ({method}): {best['c']:.3f} s")
    print(f"    pool warm-up (start, imports, one file per worker): {warmup:.3f} s")
    ratio_ba, ratio_bc = best["b"] / best["a"], best["b"] / best["c"]
    print(f"(b)/(a) = {ratio_ba:.3f}  target <= 1.15: {'ok' if ratio_ba <= 1.15 else 'MISSED'}")
    print(f"    CPU-time ratio {best['b_cpu'] / best['a_cpu']:.3f}")
    print(f"(b)/(c) = {ratio_bc:.3f}  target >= 1.8: {'ok' if ratio_bc >= 1.8 else 'MISSED'}")
    if args.startup:
        command = min(run_startup(root, args.workers) for _ in range(args.repeats))
        serial = best["a"] * STARTUP_FILES / len(pairs)
        ratio = command / serial
        print(f"(d) mbsnet eval --enhanced-dir, {STARTUP_FILES} files, {args.workers} workers, "
              f"whole command: {command:.3f} s; (a) on the same files: {serial:.3f} s")  # fmt: skip
        print(f"(d)/(a) = {ratio:.3f}  target <= 0.75: {'ok' if ratio <= 0.75 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
