"""Screen the default model's real training noise for speech, per category (issue 9).

Run: .venv/bin/python scripts/screen_noise.py [--data ../shared/data] [--manifest
     configs/default_data.tsv] [--out noise_screen.tsv]

A noise file that holds intelligible speech teaches the model to remove speech. Nobody here can
listen to 46 minutes, so every 2 s window of every real noise file in the manifest is scored by
two cues of speech that most noise lacks, and a window is flagged when both hold:

- voicing: the share of 32 ms frames with a normalized autocorrelation peak above 0.5 at a
  pitch lag of 2.5-12.5 ms (80-400 Hz), among frames within 30 dB of the window's loudest;
- syllabic rhythm: the share of the 300-3400 Hz envelope's modulation power at 2-8 Hz.

Both rates are measured in the same run: the clean training speech of the manifest gives the
detection rate on speech, seeded stationary noise (random spectral tilt, slow modulation, like
the generated training noise) the false alarms on noise. Music
and animal calls are voiced and rhythmic too, so a flag means "look at this", not "speech";
the per-category shares are printed, and the flagged windows listed in --out for inspection.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000
WINDOW = 2 * RATE
FRAME, STEP = 512, 256
VOICED_SHARE, RHYTHM_SHARE = 0.3, 0.25
"""A window is flagged when at least this share of its frames is voiced and this share of its
envelope modulation lies at 2-8 Hz (see `calibrate` for the rates these give)."""


def _frames(x: np.ndarray) -> np.ndarray:
    n = 1 + max(0, (x.size - FRAME) // STEP)
    index = np.arange(FRAME)[None] + STEP * np.arange(n)[:, None]
    return np.pad(x, (0, max(0, FRAME - x.size)))[index]


def voiced_share(window: np.ndarray) -> float:
    """Share of the window's active frames with a periodicity peak at a pitch lag."""
    frames = _frames(window) * np.hanning(FRAME)
    energy = (frames**2).sum(-1)
    active = energy > max(energy.max() * 1e-3, 1e-10)
    if not active.any():
        return 0.0
    spectrum = np.fft.rfft(frames[active], 2 * FRAME)
    acf = np.fft.irfft(np.abs(spectrum) ** 2)[:, :FRAME]
    acf = acf / np.maximum(acf[:, :1], 1e-12)
    lo, hi = RATE // 400, RATE // 80
    return float((acf[:, lo:hi].max(-1) > 0.5).mean())


def rhythm_share(window: np.ndarray) -> float:
    """Share of the speech-band envelope's modulation power (0.5-32 Hz) at 2-8 Hz."""
    spectrum = np.fft.rfft(_frames(window) * np.hanning(FRAME))
    freqs = np.fft.rfftfreq(FRAME, 1 / RATE)
    band = (freqs >= 300) & (freqs <= 3400)
    envelope = np.sqrt((np.abs(spectrum[:, band]) ** 2).sum(-1))
    envelope = envelope - envelope.mean()
    modulation = np.abs(np.fft.rfft(envelope)) ** 2
    mod_freqs = np.fft.rfftfreq(envelope.size, STEP / RATE)
    total = modulation[(mod_freqs >= 0.5) & (mod_freqs <= 32)].sum()
    syllabic = modulation[(mod_freqs >= 2) & (mod_freqs <= 8)].sum()
    return float(syllabic / total) if total > 0 else 0.0


def windows(path: Path) -> list[np.ndarray]:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != RATE:
        return []
    x = audio.mean(1)
    return [x[s : s + WINDOW] for s in range(0, max(1, x.size - WINDOW + 1), WINDOW)]


def stationary_windows(count: int, seed: int = 0) -> list[np.ndarray]:
    """Seeded stationary noise windows: random tilt (-6..+3 dB/octave), slow 0.1-1 Hz AM."""
    rng = np.random.default_rng(seed)
    freqs = np.fft.rfftfreq(WINDOW, 1 / RATE)
    out = []
    for _ in range(count):
        tilt = rng.uniform(-6, 3) / (20 * np.log10(2))  # dB/octave as a power of frequency
        shape = np.maximum(freqs, 50.0) ** tilt
        x = np.fft.irfft(np.fft.rfft(rng.standard_normal(WINDOW)) * shape, WINDOW)
        t = np.arange(WINDOW) / RATE
        am = 1 + rng.uniform(0, 0.5) * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * t)
        out.append((x * am / np.abs(x).max() * 0.3).astype(np.float32))
    return out


def flagged(window: np.ndarray) -> bool:
    return voiced_share(window) >= VOICED_SHARE and rhythm_share(window) >= RHYTHM_SHARE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--data", type=Path, default=root.parent / "shared" / "data")
    parser.add_argument("--manifest", type=Path, default=root / "configs" / "default_data.tsv")
    parser.add_argument("--out", type=Path, default=Path("noise_screen.tsv"))
    args = parser.parse_args()
    rows = list(csv.DictReader(args.manifest.open(), delimiter="\t"))
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    listing = []
    for row in rows:
        speech = row["role"] == "speech"
        real_noise = row["role"] == "noise" and row["kind"] == "real"
        if not (speech or real_noise):
            continue
        category = "clean speech (calibration)" if speech else row["category"]
        for start, window in enumerate(windows(args.data / row["source"])):
            hit = flagged(window)
            counts[category][0] += hit
            counts[category][1] += 1
            if hit and real_noise:
                listing.append((row["source"], 2 * start, category))
    for window in stationary_windows(200):
        counts["stationary noise (calibration)"][0] += flagged(window)
        counts["stationary noise (calibration)"][1] += 1
    print(f"{'category':45s} {'windows':>8s} {'flagged':>8s}")
    for category, (hits, total) in sorted(counts.items(), key=lambda kv: -kv[1][0] / kv[1][1]):
        print(f"{category[:45]:45s} {total:8d} {hits / total:8.1%}")
    with args.out.open("w") as f:
        f.write("source\tstart_s\tcategory\n")
        f.writelines(f"{s}\t{t}\t{c}\n" for s, t, c in listing)
    print(f"{len(listing)} flagged noise windows listed in {args.out}")


if __name__ == "__main__":
    main()
