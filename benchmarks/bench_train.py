"""Training step time and peak memory by preset, batch, activation checkpointing, discriminator.

Run: .venv/bin/python benchmarks/bench_train.py [--presets tiny base] [--batches 2 4 8] [--steps 3]
     [--device cpu|cuda]

Every figure is measured in this run with the real training step (`mbsnet.train.loop.train_step`
on a `build_run` run) over 2 s cuts of the real VoiceBank+DEMAND training pairs in
../shared/data/vbd_train6 (skipped with a message when absent). Each configuration runs in a
fresh subprocess, so its peak memory is its own: RSS (ru_maxrss) on the CPU,
`torch.cuda.max_memory_allocated` with --device cuda. Targets (issue 4): base at batch 4 x 2 s
within 2 GB peak RSS on the CPU, base at batch 8 within 4 GB on a GPU; time waiting for PESQ
<= 10% of a step with the discriminator on.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_RSS_MB = 2048
TARGET_GPU_MB = 4096
TARGET_PESQ_WAIT = 0.10


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


def _worker(preset: str, batch: int, ckpt: bool, disc: bool, steps: int, device: str) -> dict:
    import torch

    from mbsnet.train.config import TrainConfig
    from mbsnet.train.data import collate_fixed
    from mbsnet.train.step import train_step
    from mbsnet.train.trainer import build_run, close_logging

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        data = _data_dir(Path(tmp) / "data", _shared_pairs())
        overrides = [
            f"model.preset={preset}", f"data.data_dir='{data}'", f"train.batch_size={batch}",
            f"train.activation_checkpointing={str(ckpt).lower()}",
            f"discriminator.enabled={str(disc).lower()}", "train.num_workers=0",
            f"discriminator.pesq_workers={min(batch, 2)}", "validation.pesq_workers=0",
        ]  # fmt: skip
        cfg = TrainConfig.defaults().apply_overrides(overrides)
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        run = build_run(cfg, run_dir, torch.device(device))
        run.logger.setLevel("WARNING")
        n = len(run.train_set)
        times, waits = [], []
        for step in range(steps + 1):  # step 0 is warm-up
            items = [run.train_set[(step, (step * batch + i) % n)] for i in range(batch)]
            wait_before = run.pool.total_wait_s if run.pool else 0.0
            start = time.perf_counter()
            train_step(run, [collate_fixed(items)])
            if device == "cuda":
                torch.cuda.synchronize()
            run.progress.step += 1
            if step:
                times.append(time.perf_counter() - start)
                waits.append((run.pool.total_wait_s - wait_before) if run.pool else 0.0)
        for pool in (run.pool, run.valid_pool):
            if pool is not None:
                pool.close()
        close_logging(run.logger)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "step_s": statistics.median(times),
        "pesq_wait_share": sum(waits) / sum(times),
        "peak_mb": peak_mb,
    }


def _run(preset: str, batch: int, ckpt: bool, disc: bool, steps: int, device: str) -> dict:
    args = [preset, str(batch), str(int(ckpt)), str(int(disc)), str(steps), device]
    command = [sys.executable, __file__, "--worker", *args]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"])
    parser.add_argument("--batches", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        preset, batch, ckpt, disc, steps, device = args.worker
        flags = (ckpt == "1", disc == "1", int(steps), device)
        print(json.dumps(_worker(preset, int(batch), *flags)))
        return
    if _shared_pairs() is None:
        print("skipped: ../shared/data/vbd_train6 not found (set MBSNET_SHARED_DATA)")
        return

    mem = "peak RSS" if args.device == "cpu" else "peak GPU"
    print(f"Memory vs batch (generator only, 2 s cuts, {args.device}, 2 CPU threads):")
    print(f"{'preset':<6} {'batch':>5} {'step':>8} {mem:>9} {'ckpt step':>9} "
          f"{'ckpt mem':>9} {'saved':>9}")  # fmt: skip
    for preset in args.presets:
        for batch in args.batches:
            plain = _run(preset, batch, False, False, args.steps, args.device)
            ckpt = _run(preset, batch, True, False, args.steps, args.device)
            saved = 1 - ckpt["peak_mb"] / plain["peak_mb"]
            print(f"{preset:<6} {batch:>5} {plain['step_s']:>7.2f}s "
                  f"{plain['peak_mb']:>7.0f}MB {ckpt['step_s']:>8.2f}s "
                  f"{ckpt['peak_mb']:>7.0f}MB {saved:>9.1%}")  # fmt: skip
    print("\nDiscriminator (batch 4, PESQ targets in a persistent 2-process pool):")
    print(f"{'preset':<6} {'no disc':>8} {'with disc':>9} {'ratio':>6} {'PESQ wait':>9} "
          f"{mem:>9}")  # fmt: skip
    for preset in args.presets:
        off = _run(preset, 4, False, False, args.steps, args.device)
        on = _run(preset, 4, False, True, args.steps, args.device)
        print(f"{preset:<6} {off['step_s']:>7.2f}s {on['step_s']:>8.2f}s "
              f"{on['step_s'] / off['step_s']:>6.2f} {on['pesq_wait_share']:>9.1%} "
              f"{on['peak_mb']:>7.0f}MB")  # fmt: skip
    target = f"base batch 4 peak RSS <= {TARGET_RSS_MB} MB" if args.device == "cpu" else (
        f"base batch 8 peak GPU memory <= {TARGET_GPU_MB} MB")
    print(f"Targets: {target}; PESQ wait <= {TARGET_PESQ_WAIT:.0%} of a step. "
          "Step = median of --steps steps after one warm-up.")


if __name__ == "__main__":
    main()
