"""Model speed and memory on this CPU: parameters, MACs/s, forward RTF, peak RSS, train step.

Run: .venv/bin/python benchmarks/bench_model.py [--presets tiny base] [--repeats 5]

Every figure is measured in this run. Each measurement runs in a fresh subprocess so that its
peak RSS (ru_maxrss) belongs to that measurement alone. Targets (issue 2): base forward RTF
<= 0.10 with 2 threads, tiny <= 0.03; base forward+backward at batch 4 x 2 s within 2 GB RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

TARGETS_RTF_2T = {"tiny": 0.03, "base": 0.10}
TARGET_TRAIN_RSS_MB = 2048
SECONDS_INFER = 10.0
TRAIN_BATCH, TRAIN_SECONDS = 4, 2.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _worker(preset: str, task: str, threads: int, repeats: int) -> dict:
    import torch

    from mbsnet.info import count_macs_per_second
    from mbsnet.models import count_parameters, create_model, preset_config

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model("mbsnet", preset_config(preset))
    base_rss = _peak_rss_mb()
    result = {"preset": preset, "task": task, "threads": threads}
    if task == "info":
        result.update(params=count_parameters(model), macs_per_s=count_macs_per_second(model))
        return result
    times = []
    if task == "forward":
        model.eval()
        wave = torch.randn(1, int(SECONDS_INFER * 16000)) * 0.1
        with torch.inference_mode():
            model(wave)  # warm-up
            for _ in range(repeats):
                start = time.perf_counter()
                model(wave)
                times.append(time.perf_counter() - start)
        result["rtf"] = statistics.median(times) / SECONDS_INFER
        result["rtf_best"] = min(times) / SECONDS_INFER
    elif task == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        noisy = torch.randn(TRAIN_BATCH, int(TRAIN_SECONDS * 16000)) * 0.1
        clean = torch.randn_like(noisy) * 0.1
        for step in range(repeats + 1):
            start = time.perf_counter()
            loss = (model(noisy) - clean).abs().mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step:  # the first step is warm-up
                times.append(time.perf_counter() - start)
        result["step_s"] = statistics.median(times)
    result["base_rss_mb"] = base_rss
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def _run(preset: str, task: str, threads: int, repeats: int) -> dict:
    command = [sys.executable, __file__, "--worker", preset, task, str(threads), str(repeats)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        preset, task, threads, repeats = args.worker
        print(json.dumps(_worker(preset, task, int(threads), int(repeats))))
        return

    print(
        f"{'preset':<6} {'params':>10} {'MMAC/s':>8} {'RTF 1t':>7} {'RTF 2t':>7} {'best 2t':>7} "
        f"{'target':>7} {'ratio':>6} {'fwd RSS':>8} {'train 4x2s':>10} {'train RSS':>9}"
    )
    for preset in args.presets:
        info = _run(preset, "info", 2, 1)
        fwd1 = _run(preset, "forward", 1, args.repeats)
        fwd2 = _run(preset, "forward", 2, args.repeats)
        train = _run(preset, "train", 2, max(2, args.repeats // 2))
        target = TARGETS_RTF_2T.get(preset, float("nan"))
        print(
            f"{preset:<6} {info['params']:>10,} {info['macs_per_s'] / 1e6:>8.0f} "
            f"{fwd1['rtf']:>7.3f} {fwd2['rtf']:>7.3f} {fwd2['rtf_best']:>7.3f} {target:>7.3f} "
            f"{fwd2['rtf'] / target:>6.2f} "
            f"{fwd2['peak_rss_mb']:>6.0f}MB {train['step_s']:>9.2f}s {train['peak_rss_mb']:>7.0f}MB"
        )
    print(
        f"RTF = median of --repeats runs (best = fastest run; on a shared machine the gap is "
        f"noise). ratio = median RTF(2 threads) / target (<= 1 meets it).\nTrain RSS target "
        f"<= {TARGET_TRAIN_RSS_MB} MB at batch {TRAIN_BATCH} x {TRAIN_SECONDS:g} s"
    )


if __name__ == "__main__":
    main()
