"""Copy a training checkpoint's model into the package as the bundled default weights.

Run: .venv/bin/python scripts/bundle_weights.py RUN_DIR/checkpoints/best.pt
     [-o src/mbsnet/weights/default.pt]

Only the model travels (arch, config, weights), plus a small `extra["trained"]` record of where
it came from: the run's step, validation PESQ beside the noisy input's, the recipe (the run's
config) and the source file's sha256. No optimizer, discriminator or RNG state.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mbsnet.checkpoint import file_sha256, model_from_checkpoint, save_checkpoint
from mbsnet.train.state import read_train_state

OUT = Path(__file__).resolve().parents[1] / "src" / "mbsnet" / "weights" / "default.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    args = parser.parse_args()
    ckpt = read_train_state(args.checkpoint)
    train = ckpt["extra"]["train"]
    progress = train["progress"]
    trained = {
        "step": progress["step"],
        "best_step": progress["best_step"],
        "valid_pesq": progress["best_pesq"],
        "noisy_pesq": progress.get("noisy_pesq", float("nan")),
        "config": train["config"],
        "source_sha256": file_sha256(args.checkpoint),
    }
    save_checkpoint(args.output, model_from_checkpoint(ckpt), extra={"trained": trained})
    size = args.output.stat().st_size / 2**20
    print(f"{args.output}: step {trained['step']}, validation PESQ {trained['valid_pesq']:.3f} "
          f"(noisy {trained['noisy_pesq']:.3f}), {size:.2f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
