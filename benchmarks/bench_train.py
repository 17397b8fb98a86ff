"""Training step time and peak memory by preset, batch, activation checkpointing, discriminator.

Run: .venv/bin/python benchmarks/bench_train.py [--presets tiny base] [--batches 2 4 8] [--steps 3]
     [--device cpu|cuda] [--only speedup|allocator|memory|disc] [--rounds 3]
     [--profile today|fast|glibc|kept]

Every figure is measured in this run with the real training step (`mbsnet.train.loop.train_step`
on a `build_run` run) over 2 s cuts of the real VoiceBank+DEMAND training pairs in
../shared/data/vbd_train6 (skipped with a message when absent). Each configuration runs in a
fresh subprocess, so its peak memory is its own: RSS (ru_maxrss) on the CPU,
`torch.cuda.max_memory_allocated` with --device cuda. Targets (issue 4): base at batch 4 x 2 s
within 2 GB peak RSS on the CPU, base at batch 8 within 4 GB on a GPU; time waiting for PESQ
<= 10% of a step with the discriminator on.

Speed-up (issue 9): the step as it was (`train.recompute_mamba = true`, eager, glibc's
allocator) against the fast step (`recompute_mamba = false`, `train.compile = true`,
`train.keep_freed_memory = true`), from the same seed on the same batches, in alternating fresh
processes. The first step's losses (same weights, same batch) show that the result is unchanged.
Target >= 1.5x. `--only allocator` does the same for the whole fast step with the discriminator
on, glibc's default allocator against freed memory kept for reuse, with each one's peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGET_RSS_MB = 2048
TARGET_GPU_MB = 4096
TARGET_PESQ_WAIT = 0.10
TARGET_SPEEDUP = 1.5
GLIBC_ALLOCATOR = "train.keep_freed_memory=false"
KEPT_ALLOCATOR = "train.keep_freed_memory=true"
COMPILED = ("train.recompute_mamba=false", "train.compile=true")
TODAY = ("train.recompute_mamba=true", "train.compile=false", GLIBC_ALLOCATOR)
FAST = (*COMPILED, KEPT_ALLOCATOR)
GEN_ONLY = "discriminator.enabled=false"
VARIANTS = {
    "today": (*TODAY, GEN_ONLY),
    "fast": (*FAST, GEN_ONLY),
    # The whole step (discriminator and PESQ targets on) with glibc's default allocator, and
    # with freed memory kept for reuse (mbsnet.allocator).
    "glibc": (*COMPILED, GLIBC_ALLOCATOR),
    "kept": FAST,
}


def _shared_pairs() -> Path | None:
    root = Path(os.environ.get("MBSNET_SHARED_DATA", REPO.parent / "shared" / "data"))
    pairs = root / "vbd_train6"
    return pairs if (pairs / "clean").is_dir() and (pairs / "noisy").is_dir() else None


def _data_dir(tmp: Path, pairs: Path) -> Path:
    """train/ and test/ views of the pairs (symlinks), the layout `mbsnet train` reads.

    Each pair is linked twice under two names, so that a batch of 8 fits in one epoch.
    """
    for split in ("train", "test"):
        for side in ("clean", "noisy"):
            folder = tmp / split / side
            folder.mkdir(parents=True)
            for source in sorted((pairs / side).glob("*.wav")):
                for copy in ("a", "b"):
                    (folder / f"{copy}_{source.name}").symlink_to(source)
    return tmp


def _build(tmp: Path, name: str, preset: str, batch: int, device: str, extra: list[str]) -> Any:
    """A `build_run` run over the linked pairs, with the benchmark's settings plus `extra`."""
    import torch

    from mbsnet.train.config import TrainConfig
    from mbsnet.train.run import build_run

    data = tmp / "data"
    if not data.exists():
        _data_dir(data, _shared_pairs())
    overrides = [
        f"model.preset={preset}", f"data.data_dir='{data}'", f"train.batch_size={batch}",
        "train.num_workers=0", f"discriminator.pesq_workers={min(batch, 2)}",
        "validation.pesq_workers=0", *extra,
    ]  # fmt: skip
    cfg = TrainConfig.defaults().apply_overrides(overrides)
    run_dir = tmp / name
    run_dir.mkdir()
    run = build_run(cfg, run_dir, torch.device(device))
    run.logger.setLevel("WARNING")
    return run


def _timed_step(run: Any, step: int, batch: int, device: str) -> tuple[float, dict]:
    """Seconds of one real training step on batch `step` of the pairs, and its log row."""
    import torch

    from mbsnet.train.data import collate_fixed
    from mbsnet.train.step import train_step

    n = len(run.train_set)
    items = [run.train_set[(step, (step * batch + i) % n)] for i in range(batch)]
    start = time.perf_counter()
    row = train_step(run, [collate_fixed(items)])
    if device == "cuda":
        torch.cuda.synchronize()
    run.progress.step += 1
    return time.perf_counter() - start, row


def _close(run: Any) -> None:
    from mbsnet.train.logs import close_logging

    for pool in (run.pool, run.valid_pool):
        if pool is not None:
            pool.close()
    close_logging(run.logger)


@contextlib.contextmanager
def _variant_run(preset: str, variant: str, device: str) -> Iterator[Any]:
    """A batch-4 run of one of `VARIANTS`, on 2 threads."""
    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        run = _build(Path(tmp), variant, preset, 4, device, list(VARIANTS[variant]))
        yield run
        _close(run)


def _speed_worker(preset: str, variant: str, steps: int, device: str) -> dict:
    """Median step time of one variant, its first step's loss and the process's peak RSS."""
    with _variant_run(preset, variant, device) as run:
        times, first_loss = [], None
        for step in range(steps + 2):  # steps 0 and 1 are warm-up (compilation)
            seconds, row = _timed_step(run, step, 4, device)
            if step == 0:
                first_loss = row["loss"]
            elif step > 1:
                times.append(seconds)
    return {"step_s": statistics.median(times), "loss": first_loss, "peak_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """This process's peak resident memory (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _profile(preset: str, variant: str, device: str, rows: int = 30) -> None:
    """Where one step of `variant` spends its time: torch.profiler's table, by self time, with
    each kernel that torch.compile generated listed by name (inductor's kernel profile)."""
    import torch._inductor.config as inductor_config
    from torch.profiler import profile

    inductor_config.cpp.enable_kernel_profile = True
    with _variant_run(preset, variant, device) as run:
        for step in range(2):  # warm-up (compilation), as in _speed_worker
            _timed_step(run, step, 4, device)
        with profile() as prof:
            seconds, _ = _timed_step(run, 2, 4, device)
    print(f"{preset} {variant}: one step {seconds:.3f}s (profiled)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def _worker(preset: str, batch: int, ckpt: bool, disc: bool, steps: int, device: str) -> dict:
    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        flags = [f"train.activation_checkpointing={str(ckpt).lower()}",
                 f"discriminator.enabled={str(disc).lower()}"]  # fmt: skip
        run = _build(Path(tmp), "run", preset, batch, device, flags)
        times, waits = [], []
        for step in range(steps + 1):  # step 0 is warm-up
            wait_before = run.pool.total_wait_s if run.pool else 0.0
            seconds, _ = _timed_step(run, step, batch, device)
            if step:
                times.append(seconds)
                waits.append((run.pool.total_wait_s - wait_before) if run.pool else 0.0)
        _close(run)
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _peak_rss_mb()
    return {
        "step_s": statistics.median(times),
        "pesq_wait_share": sum(waits) / sum(times),
        "peak_mb": peak_mb,
    }


def _subprocess(*args: str) -> dict:
    command = [sys.executable, __file__, *args]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _run(preset: str, batch: int, ckpt: bool, disc: bool, steps: int, device: str) -> dict:
    args = [preset, str(batch), str(int(ckpt)), str(int(disc)), str(steps), device]
    return _subprocess("--worker", *args)


def _speedup_table(presets: list[str], steps: int, device: str, rounds: int) -> None:
    """Today's step against the fast one (generator only)."""
    title = f"Speed-up of the training step (batch 4 x 2 s, generator only, {device}, 2 threads):"
    _paired_table(title, ("today", "fast"), presets, steps, device, rounds)
    print(f"today = {', '.join(TODAY)}; fast = {', '.join(FAST)}; target >= {TARGET_SPEEDUP}x.\n")


def _allocator_table(presets: list[str], steps: int, device: str, rounds: int) -> None:
    """The whole fast step with glibc's default allocator against freed memory kept."""
    title = f"Allocator (the fast step with discriminator, batch 4 x 2 s, {device}, 2 threads):"
    _paired_table(title, ("glibc", "kept"), presets, steps, device, rounds)
    print("glibc = default mmap/trim thresholds; kept = mbsnet.allocator.keep_freed_memory.\n")


def _paired_table(
    title: str, pair: tuple[str, str], presets: list[str], steps: int, device: str, rounds: int
) -> None:
    """Variant pair[0] against pair[1]: each in its own process, alternated `rounds` times.

    A compiled and an eager model in one process disturb each other (the compiled kernels'
    OpenMP threads), so each variant gets a fresh process; alternating them spreads drift in
    the machine's load over both, and each round's ratio is printed with the median of the
    rounds' ratios per preset (a slow spell of the machine moves one round, not the median).
    """
    a, b = pair
    print(title)
    print(f"{'preset':<6} {'round':>5} {a:>8} {b:>8} {'speed-up':>8}  "
          f"first-step loss {a} / {b}, peak RSS")  # fmt: skip
    for preset in presets:
        ratios = []
        for i in range(rounds):
            first, second = (
                _subprocess("--speed-worker", preset, variant, str(steps), device)
                for variant in pair
            )
            ratios.append(first["step_s"] / second["step_s"])
            print(f"{preset:<6} {i + 1:>5} {first['step_s']:>7.3f}s {second['step_s']:>7.3f}s "
                  f"{ratios[-1]:>7.2f}x  {first['loss']:.6f} / {second['loss']:.6f}, "
                  f"{first['peak_mb']:.0f} / {second['peak_mb']:.0f} MB")  # fmt: skip
        print(f"{preset:<6} {'median':>6} {'':>17} {statistics.median(ratios):>7.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"])
    parser.add_argument("--batches", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--only", choices=["speedup", "allocator", "memory", "disc"])
    parser.add_argument("--rounds", type=int, default=3, help="speed-up rounds per preset")
    parser.add_argument(
        "--profile", choices=list(VARIANTS), help="profile one step of this variant per preset"
    )
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--speed-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.speed_worker:
        preset, variant, steps, device = args.speed_worker
        print(json.dumps(_speed_worker(preset, variant, int(steps), device)))
        return
    if args.worker:
        preset, batch, ckpt, disc, steps, device = args.worker
        flags = (ckpt == "1", disc == "1", int(steps), device)
        print(json.dumps(_worker(preset, int(batch), *flags)))
        return
    if _shared_pairs() is None:
        print("skipped: ../shared/data/vbd_train6 not found (set MBSNET_SHARED_DATA)")
        return
    if args.profile:
        for preset in args.presets:
            _profile(preset, args.profile, args.device)
        return

    if args.only in (None, "speedup"):
        _speedup_table(args.presets, args.steps, args.device, args.rounds)
    if args.only in (None, "allocator"):
        _allocator_table(args.presets, args.steps, args.device, args.rounds)
    mem = "peak RSS" if args.device == "cpu" else "peak GPU"
    if args.only in (None, "memory"):
        _memory_table(args.presets, args.batches, args.steps, args.device, mem)
    if args.only in (None, "disc"):
        _disc_table(args.presets, args.steps, args.device, mem)
    target = f"base batch 4 peak RSS <= {TARGET_RSS_MB} MB" if args.device == "cpu" else (
        f"base batch 8 peak GPU memory <= {TARGET_GPU_MB} MB")
    print(f"Targets: {target}; PESQ wait <= {TARGET_PESQ_WAIT:.0%} of a step. "
          "Step = median of --steps steps after one warm-up.")


def _memory_table(
    presets: list[str], batches: list[int], steps: int, device: str, mem: str
) -> None:
    print(f"Memory vs batch (generator only, 2 s cuts, {device}, 2 CPU threads):")
    print(f"{'preset':<6} {'batch':>5} {'step':>8} {mem:>9} {'ckpt step':>9} "
          f"{'ckpt mem':>9} {'saved':>9}")  # fmt: skip
    for preset in presets:
        for batch in batches:
            plain = _run(preset, batch, False, False, steps, device)
            ckpt = _run(preset, batch, True, False, steps, device)
            saved = 1 - ckpt["peak_mb"] / plain["peak_mb"]
            print(f"{preset:<6} {batch:>5} {plain['step_s']:>7.2f}s "
                  f"{plain['peak_mb']:>7.0f}MB {ckpt['step_s']:>8.2f}s "
                  f"{ckpt['peak_mb']:>7.0f}MB {saved:>9.1%}")  # fmt: skip


def _disc_table(presets: list[str], steps: int, device: str, mem: str) -> None:
    print("\nDiscriminator (batch 4, PESQ targets in a persistent 2-process pool):")
    print(f"{'preset':<6} {'no disc':>8} {'with disc':>9} {'ratio':>6} {'PESQ wait':>9} "
          f"{mem:>9}")  # fmt: skip
    for preset in presets:
        off = _run(preset, 4, False, False, steps, device)
        on = _run(preset, 4, False, True, steps, device)
        print(f"{preset:<6} {off['step_s']:>7.2f}s {on['step_s']:>8.2f}s "
              f"{on['step_s'] / off['step_s']:>6.2f} {on['pesq_wait_share']:>9.1%} "
              f"{on['peak_mb']:>7.0f}MB")  # fmt: skip

if __name__ == "__main__":
    main()
