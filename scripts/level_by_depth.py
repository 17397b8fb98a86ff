"""How much a system changes speech frames, by how far each lies below the file's loudest.

Run: .venv/bin/python scripts/level_by_depth.py --clean-dir CLEAN NAME=DIR [NAME=DIR ...]
     e.g. --clean-dir ../shared/data/vbd_test25/clean noisy=../shared/data/vbd_test25/noisy
          model=enhanced/   (files matched by name; the clean file's length rules)

STOI scores the short-time envelopes of every frame within 40 dB of a file's loudest, so a
model that gates quiet speech loses STOI even where PESQ rises. For each file, the 32 ms frames
(16 ms hop) of the clean reference are binned by their 300-4000 Hz energy below the loudest
frame's, and each system's level change in that band (system - clean, dB) is averaged per bin
over all files' frames. A system that passes speech untouched reads 0 in every bin; noise
left in reads positive in the deep bins, speech removed negative.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from mbsnet import SAMPLE_RATE
from mbsnet.audio import AudioError, read_audio

RATE = SAMPLE_RATE
FRAME, HOP = 512, 256
BAND_HZ = (300.0, 4000.0)
DEPTH_BINS_DB = (0.0, 10.0, 20.0, 30.0, 40.0, 60.0)


def band_energy_db(x: np.ndarray) -> np.ndarray:
    """Per-frame energy in BAND_HZ, dB, of Hann-windowed FRAME-sample frames every HOP."""
    if x.size < FRAME:
        x = np.pad(x, (0, FRAME - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP] * np.hanning(FRAME)
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    freqs = np.fft.rfftfreq(FRAME, 1.0 / RATE)
    band = (freqs >= BAND_HZ[0]) & (freqs < BAND_HZ[1])
    return 10 * np.log10(power[:, band].sum(-1) + 1e-12)


def _mono(path: Path) -> np.ndarray:
    """The file's samples (float64), refused in one line unless mono at RATE."""
    try:
        x, info = read_audio(path)
    except AudioError as err:
        raise SystemExit(str(err)) from err
    if info.channels != 1 or info.samplerate != RATE:
        raise SystemExit(f"{path}: need mono {RATE} Hz audio, got {info.channels} channel(s) "
                         f"at {info.samplerate} Hz")  # fmt: skip
    return x[0].astype(np.float64)


def table(clean_dir: Path, systems: dict[str, Path]) -> list[tuple[str, int, list[float]]]:
    """Rows (depth bin, frames, mean change per system) over the clean files all systems have."""
    names = sorted(p.name for p in clean_dir.glob("*.wav"))
    names = [n for n in names if all((d / n).is_file() for d in systems.values())]
    if not names:
        raise SystemExit(f"no clean file in {clean_dir} has a match in every system's folder")
    depth: list[np.ndarray] = []
    change: dict[str, list[np.ndarray]] = {s: [] for s in systems}
    for name in names:
        clean = _mono(clean_dir / name)
        ref = band_energy_db(clean)
        depth.append(ref.max() - ref)
        for system, folder in systems.items():
            # the clean file's length rules: a longer output is cut, a shorter one padded silent
            out = _mono(folder / name)[: clean.size]
            out = np.pad(out, (0, clean.size - out.size))
            change[system].append(band_energy_db(out) - ref)
    all_depth = np.concatenate(depth)
    all_change = {s: np.concatenate(c) for s, c in change.items()}
    rows = []
    for lo, hi in itertools.pairwise(DEPTH_BINS_DB):
        sel = (all_depth >= lo) & (all_depth < hi)
        means = [float(all_change[s][sel].mean()) if sel.any() else float("nan")
                 for s in systems]  # fmt: skip
        rows.append((f"{lo:g}-{hi:g}", int(sel.sum()), means))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clean-dir", type=Path, required=True)
    parser.add_argument("systems", nargs="+", metavar="NAME=DIR")
    args = parser.parse_args()
    systems = {}
    for spec in args.systems:
        name, sep, folder = spec.partition("=")
        if not sep or not Path(folder).is_dir():
            raise SystemExit(f"{spec}: expected NAME=DIR with an existing folder")
        systems[name] = Path(folder)
    print(f"level change in {BAND_HZ[0]:g}-{BAND_HZ[1]:g} Hz (system - clean, dB), by the clean "
          "frame's depth below the file's loudest")  # fmt: skip
    print("| depth (dB) | frames | " + " | ".join(systems) + " |")
    print("|---|---|" + "---|" * len(systems))
    for depth, frames, means in table(args.clean_dir, systems):
        print(f"| {depth} | {frames} | " + " | ".join(f"{m:+.2f}" for m in means) + " |")


if __name__ == "__main__":
    main()
