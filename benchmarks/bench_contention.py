"""Training step time on a shared CPU: OpenMP's default waiting against OMP_WAIT_POLICY=PASSIVE.

Run: .venv/bin/python benchmarks/bench_contention.py [--preset tiny] [--steps 4]

A competitor process keeps one core busy (as another job, a test run or a data loader would)
while a fresh process times forward+backward of the model at batch 4 x 2 s with 2 threads,
once per policy, alternated twice. Printed: seconds per step and the ratio default / PASSIVE
from this run. The wait policy must be set before torch loads OpenMP, hence the subprocesses.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

WORKER = """
import sys, time, torch
from mbsnet.models import create_model, preset_config, set_memory_saving
torch.set_num_threads(2)
model = create_model("mbsnet", preset_config(sys.argv[1]))
set_memory_saving(model, checkpoint_blocks=False, recompute_mamba=False)
x = torch.randn(4, 32000)
model(x).abs().mean().backward()  # warm-up
start = time.perf_counter()
for _ in range(int(sys.argv[2])):
    model(x).abs().mean().backward()
print((time.perf_counter() - start) / int(sys.argv[2]))
"""
BUSY = "while True: pass"


def _step_seconds(preset: str, steps: int, policy: str | None) -> float:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", WORKER, preset, str(steps)], env=env,
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        time.sleep(0.5)
        print(f"{args.preset}, batch 4 x 2 s, 2 threads, one core kept busy by another process:")
        for round_ in (1, 2):
            default = _step_seconds(args.preset, args.steps, None)
            passive = _step_seconds(args.preset, args.steps, "PASSIVE")
            print(f"round {round_}: default {default:.2f} s/step, PASSIVE {passive:.2f} s/step, "
                  f"default / PASSIVE = {default / passive:.1f}x")  # fmt: skip
    finally:
        busy.kill()


if __name__ == "__main__":
    main()
