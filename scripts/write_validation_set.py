"""Write a training run's fixed validation items to disk, so `mbsnet eval` can score any model
on exactly the items the run validated on.

Run: .venv/bin/python scripts/write_validation_set.py RUN_DIR/config.toml OUT
         [--set section.key=value ...]
     .venv/bin/mbsnet eval --test-dir OUT --checkpoint CKPT --out RESULTS

With --training-files it writes OUT/{noisy,clean}/tNNN.wav instead: as many mixtures, made the
same way with the same seed, but from the training speech and noise. A model that gains as
much on those as on the validation items underfits; one that gains more has memorised its
training material (MODEL_CARD.md, "What limits it").

Writes OUT/noisy/vNNN.wav and OUT/clean/vNNN.wav (16 kHz, 32-bit float, so nothing is rounded
or clipped). The items come from the run's own data code with the config's data paths and
seeds, so they are the ones validation scores: `mbsnet eval` of a run's best.pt on OUT gives the
PESQ its log printed. A run's validation items follow its mixing recipe; writing one recipe's
items once keeps a fixed yardstick for models trained with other recipes (MODEL_CARD.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mbsnet import SAMPLE_RATE
from mbsnet.audio import write_audio
from mbsnet.train.config import TrainConfig
from mbsnet.train.run import build_datasets, training_file_mixtures


def write_validation_set(cfg: TrainConfig, out: Path, training_files: bool = False) -> int:
    """Write `cfg`'s validation items under `out`/{noisy,clean}; returns how many.

    `training_files` writes the same recipe's mixtures of the training files instead.
    """
    valid = training_file_mixtures(cfg) if training_files else build_datasets(cfg)[1]
    prefix = "t" if training_files else "v"
    for sub in ("noisy", "clean"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for index in range(len(valid)):
        noisy, clean, length = valid[index]
        for sub, audio in (("noisy", noisy), ("clean", clean)):
            samples = audio[..., :length].reshape(1, -1).numpy()
            path = out / sub / f"{prefix}{index:03d}.wav"
            write_audio(path, samples, SAMPLE_RATE, subtype="FLOAT")
    return len(valid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="a run's config.toml (or any training config)")
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="config override, as for mbsnet train",
    )  # fmt: skip
    parser.add_argument(
        "--training-files", action="store_true",
        help="mix the training speech and noise instead of the held-out files",
    )  # fmt: skip
    args = parser.parse_args()
    cfg = TrainConfig.from_toml(args.config).apply_overrides(args.overrides)
    count = write_validation_set(cfg, args.out, args.training_files)
    what = "training-file mixture(s)" if args.training_files else "validation item(s)"
    print(f"{args.out}: {count} {what} from {args.config}")


if __name__ == "__main__":
    main()
