"""Build the training material of the bundled default model, and its manifest.

Run: .venv/bin/python scripts/prepare_default_data.py [--shared ../shared/data]
     [--out /work/data/default] [--manifest configs/default_data.tsv]
     .venv/bin/python scripts/prepare_default_data.py --summary   # tables of the manifest

Writes OUT/{speech,noise,rir}/ (links to the real files, plus generated ones) for
`mbsnet train --config configs/default.toml --speech OUT/speech --noise OUT/noise --rir OUT/rir`,
and a manifest (one row per file: role, kind, category, seconds, licence, source). Every choice
is seeded, so the same shared data gives the same folders and the same manifest.

- Clean targets: LibriSpeech train-clean-100 (minus the five clips MANIFEST.md flags for steady
  background), the Asterisk prompts and CMU ARCTIC (all 16 kHz), minus files without speech:
  silent ones (peak below -60 dBFS: Asterisk's silence/*.wav, a -80 dBFS hiss that the SNR
  rule would treat as speech and train the model to keep) and tt-monkeys.
- Real noise: every 16 kHz file under noise/ (other rates are listed as excluded).
- In-domain noise: noisy - clean of the six vbd_train6 pairs (additive DEMAND noise; the script
  checks that it is uncorrelated with the clean speech).
- Babble: 3-6 talkers from LibriSpeech test-other, whose speakers are not among the targets.
- Stationary noise: Gaussian noise with a random spectral tilt and a slow amplitude modulation.
- Reverberation: shoebox rooms simulated with pyroomacoustics (image source method), plus the
  four real RIRs. The test sets (vbd_test25, dns_test3, dns_val5) are never read.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
REPO = Path(__file__).resolve().parents[1]
FLAGGED_SPEECH = {  # MANIFEST.md: "may carry steady background"
    "445-123857-0000", "1363-135842-0000", "839-130898-0000", "150-126107-0000",
    "211-122425-0000",
}  # fmt: skip
NOT_SPEECH = {"tt-monkeys": "not speech (monkey screeches)"}  # Asterisk prompt, by file stem
SILENT_PEAK = 10 ** (-60 / 20)  # a clean "speech" file whose peak is below -60 dBFS is silence
FOLDER_LICENCES = {  # MANIFEST.md's table, for folders without per-file rows
    "speech/librispeech": "CC BY 4.0",
    "speech/asterisk_allison_16k": "CC BY-SA 3.0",
    "speech/cmu_arctic": "CMU ARCTIC licence (free, attribution)",
    "noise/speech_commands": "CC BY 4.0",
    "noise/speechbrain": "Apache-2.0",
    "rir/speechbrain": "Apache-2.0",
    "vbd_train6": "CC BY-NC 4.0 (NON-COMMERCIAL)",
}
FOLDER_CATEGORIES = {
    "noise/speech_commands": "domestic/machine (dishes, exercise bike)",
    "noise/speechbrain": "mixed environmental",
}
N_BABBLE, N_STATIONARY, N_ROOMS = 40, 30, 60
GENERATED_SECONDS = 10.0


def _per_file_rows(shared: Path) -> dict[str, tuple[str, str]]:
    """path relative to shared/data -> (category, licence) from the per-file manifests."""
    rows: dict[str, tuple[str, str]] = {}
    with open(shared / "noise/more/MANIFEST.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            rows[row["path"]] = (row["category"], row["licence"])
    with open(shared / "MANIFEST_more.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["path"].startswith("noise/"):
                rows[row["path"]] = (row["speaker_or_type"], row["licence"])
    return rows


def _licence(rel: str) -> str:
    for prefix, licence in FOLDER_LICENCES.items():
        if rel.startswith(prefix):
            return licence
    raise SystemExit(f"no licence known for {rel}: add it to FOLDER_LICENCES from MANIFEST.md")


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(source.resolve())


def _write(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    peak = float(np.abs(audio).max())
    sf.write(path, (audio * (0.5 / peak if peak > 0.5 else 1.0)).astype(np.float32), SR,
             subtype="PCM_16")  # fmt: skip


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".wav", ".flac"))


def _speech_problem(path: Path, samplerate: int) -> str:
    """Why a clean-speech file may not be a training target ("" if it may)."""
    if path.stem in FLAGGED_SPEECH:
        return "flagged background"
    if path.stem in NOT_SPEECH:
        return NOT_SPEECH[path.stem]
    if samplerate != SR:
        return "not 16 kHz"
    if float(np.abs(sf.read(path, dtype="float32")[0]).max()) < SILENT_PEAK:
        return "silent (peak below -60 dBFS)"
    return ""


def _speech(shared: Path, out: Path, rows: list[dict]) -> None:
    folders = ["speech/librispeech/train-clean-100", "speech/asterisk_allison_16k",
               "speech/cmu_arctic"]  # fmt: skip
    for folder in folders:
        for path in _audio_files(shared / folder):
            rel = str(path.relative_to(shared))
            info = sf.info(path)
            why = _speech_problem(path, info.samplerate)
            if why:
                rows.append(_row("excluded", "speech", why, info.duration, _licence(rel), rel))
                (out / "speech" / rel.replace("/", "__")).unlink(missing_ok=True)  # a stale link
                continue
            _link(path, out / "speech" / rel.replace("/", "__"))
            rows.append(_row("speech", "real", "clean speech", info.duration, _licence(rel), rel))


def _real_noise(shared: Path, out: Path, rows: list[dict]) -> None:
    per_file = _per_file_rows(shared)
    for path in _audio_files(shared / "noise"):
        rel = str(path.relative_to(shared))
        info = sf.info(path)
        if rel in per_file:
            category, licence = per_file[rel]
        else:
            folder = "/".join(rel.split("/")[:2])
            category = FOLDER_CATEGORIES.get(folder, folder)
            licence = _licence(rel) if info.samplerate == SR else "-"
        if info.samplerate != SR or info.channels != 1:
            rows.append(_row("excluded", "noise", "not 16 kHz mono", info.duration, licence, rel))
            continue
        _link(path, out / "noise" / rel.replace("/", "__"))
        rows.append(_row("noise", "real", category, info.duration, licence, rel))


def _vbd_noise(shared: Path, out: Path, rows: list[dict]) -> None:
    """noisy - clean of the vbd_train6 pairs, checked to be additive (uncorrelated)."""
    for noisy_path in sorted((shared / "vbd_train6/noisy").glob("*.wav")):
        noisy, _ = sf.read(noisy_path, dtype="float64")
        clean, _ = sf.read(shared / "vbd_train6/clean" / noisy_path.name, dtype="float64")
        noise = noisy - clean
        corr = float(np.dot(noise, clean) / math.sqrt(np.dot(noise, noise) * np.dot(clean, clean)))
        if abs(corr) > 0.1:
            raise SystemExit(f"{noisy_path.name}: noisy - clean correlates with clean ({corr:.2f})")
        name = f"generated__vbd_train6_noise__{noisy_path.stem}.flac"
        _write(out / "noise" / name, noise)
        rel = f"vbd_train6/{{noisy,clean}}/{noisy_path.name}"
        note = f"DEMAND (noisy - clean, corr {corr:.3f})"
        rows.append(_row("noise", "derived", note, noise.size / SR,
                         FOLDER_LICENCES["vbd_train6"], rel))  # fmt: skip


def _babble(shared: Path, out: Path, rows: list[dict], rng: np.random.Generator) -> None:
    talkers = _audio_files(shared / "speech/librispeech/test-other")
    clips = [sf.read(p, dtype="float64")[0] for p in talkers]
    n = int(GENERATED_SECONDS * SR)
    for i in range(N_BABBLE):
        mix = np.zeros(n)
        for j in rng.choice(len(clips), size=int(rng.integers(3, 7)), replace=False):
            clip = clips[j] / (np.sqrt(np.mean(clips[j] ** 2)) + 1e-9)
            start = int(rng.integers(0, clip.size))
            mix += np.roll(np.resize(clip, n), -start) * 10 ** (rng.uniform(-6, 0) / 20)
        _write(out / "noise" / f"generated__babble_{i:02d}.flac", mix)
        note = "babble (LibriSpeech test-other talkers)"
        rows.append(_row("noise", "generated", note, GENERATED_SECONDS, "CC BY 4.0",
                         "speech/librispeech/test-other"))  # fmt: skip


def _stationary(out: Path, rows: list[dict], rng: np.random.Generator) -> None:
    n = int(GENERATED_SECONDS * SR)
    freqs = np.fft.rfftfreq(n, 1 / SR)
    octaves = np.log2(np.maximum(freqs, 50.0) / 1000.0)
    t = np.arange(n) / SR
    for i in range(N_STATIONARY):
        tilt = rng.uniform(-6.0, 3.0)  # dB per octave around 1 kHz
        spectrum = np.fft.rfft(rng.standard_normal(n)) * 10 ** (tilt * octaves / 20)
        noise = np.fft.irfft(spectrum, n)
        rate, depth = rng.uniform(0.05, 1.0), rng.uniform(0.0, 0.5)
        noise *= 1.0 + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
        _write(out / "noise" / f"generated__stationary_{i:02d}.flac", noise)
        note = f"stationary (tilt {tilt:+.1f} dB/oct, {depth:.2f} AM at {rate:.2f} Hz)"
        rows.append(_row("noise", "generated", note, GENERATED_SECONDS, "CC0 (generated)", "-"))


def _rooms(shared: Path, out: Path, rows: list[dict], rng: np.random.Generator) -> None:
    import pyroomacoustics as pra

    for path in _audio_files(shared / "rir"):
        rel = str(path.relative_to(shared))
        _link(path, out / "rir" / rel.replace("/", "__"))
        rows.append(_row("rir", "real", "room", sf.info(path).duration, _licence(rel), rel))
    for i in range(N_ROOMS):
        dims = rng.uniform([3.0, 3.0, 2.4], [10.0, 8.0, 4.0])
        rt60 = rng.uniform(0.2, 1.0)
        absorption, max_order = pra.inverse_sabine(rt60, dims)
        room = pra.ShoeBox(dims, fs=SR, materials=pra.Material(absorption),
                           max_order=min(max_order, 30))  # fmt: skip
        margin = 0.5
        room.add_source(rng.uniform(margin, dims - margin))
        room.add_microphone(rng.uniform(margin, dims - margin))
        room.compute_rir()
        rir = np.asarray(room.rir[0][0])
        _write(out / "rir" / f"generated__room_{i:02d}.flac", rir)
        note = f"simulated room {dims[0]:.1f}x{dims[1]:.1f}x{dims[2]:.1f} m, RT60 {rt60:.2f} s"
        rows.append(_row("rir", "generated", note, rir.size / SR, "CC0 (generated)",
                         f"pyroomacoustics {pra.__version__}"))  # fmt: skip


def _row(role: str, kind: str, category: str, seconds: float, licence: str, source: str) -> dict:
    return {"role": role, "kind": kind, "category": category, "seconds": f"{seconds:.2f}",
            "licence": licence, "source": source}  # fmt: skip


def _group(category: str) -> str:
    """Category label without the per-file details in parentheses."""
    return category.split(" (")[0]


def summary(manifest: Path) -> str:
    """Markdown tables of a manifest: minutes per role and noise type, non-commercial items."""
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    lines = ["| role | files | minutes |", "|---|---|---|"]
    for role in ("speech", "noise", "rir", "excluded"):
        chosen = [r for r in rows if r["role"] == role]
        minutes = sum(float(r["seconds"]) for r in chosen) / 60
        lines.append(f"| {role} | {len(chosen)} | {minutes:.1f} |")
    lines += ["", "| noise type | files | minutes |", "|---|---|---|"]
    noise: dict[str, list[float]] = {}
    for r in rows:
        if r["role"] == "noise":
            noise.setdefault(_group(r["category"]), []).append(float(r["seconds"]))
    for name, seconds in sorted(noise.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"| {name} | {len(seconds)} | {sum(seconds) / 60:.1f} |")
    nc = [r for r in rows if r["role"] != "excluded" and "NC" in r["licence"]]
    lines += ["", f"Non-commercial (NC) items used: {len(nc)}"]
    lines += [f"- {r['source']} ({r['licence']})" for r in nc]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("/work/data/default"))
    parser.add_argument("--manifest", type=Path, default=REPO / "configs" / "default_data.tsv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--summary", action="store_true", help="print the manifest's tables")
    args = parser.parse_args()
    if args.summary:
        print(summary(args.manifest))
        return
    rng = np.random.default_rng(args.seed)
    rows: list[dict] = []
    _speech(args.shared, args.out, rows)
    _real_noise(args.shared, args.out, rows)
    _vbd_noise(args.shared, args.out, rows)
    _babble(args.shared, args.out, rows, rng)
    _stationary(args.out, rows, rng)
    _rooms(args.shared, args.out, rows, rng)
    args.manifest.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.manifest.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, args.manifest)
    minutes: dict[str, float] = {}
    for row in rows:
        minutes[row["role"]] = minutes.get(row["role"], 0.0) + float(row["seconds"]) / 60
    print(", ".join(f"{role} {m:.1f} min" for role, m in minutes.items()), "->", args.out)


if __name__ == "__main__":
    main()
