"""Training data: pair scans, seeded cuts, fixed validation, on-the-fly mixing, reproducibility."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from mbsnet.audio import AudioError
from mbsnet.train import (
    DataError,
    MixingTrainSet,
    MixingValidationSet,
    PairedTrainSet,
    ValidationSet,
    active_power,
    collate_fixed,
    collect_audio_files,
    find_paired_splits,
    scan_pairs,
)
from mbsnet.train.files import AudioFile, load_mono, read_region
from mbsnet.train.mixing import EQ_BANDS, EQ_RANGE_HZ, eq_filter, lowpass_gains, tilt_gains

SR = 16000


def _tone(seconds: float, rate: int = SR, freq: float = 220.0, seed: int = 0) -> np.ndarray:
    """A tone plus a little noise, so cuts at different positions differ."""
    t = np.arange(round(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * noise).astype(np.float32)


def _write(path: Path, x: np.ndarray, rate: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, rate)
    return path


def _write_pair(root: Path, name: str, seconds: float, rate: int = SR, seed: int = 0) -> None:
    clean = _tone(seconds, rate, seed=seed)
    _write(root / "clean" / name, clean, rate)
    _write(root / "noisy" / name, 0.5 * clean + 0.01, rate)  # noisy = f(clean): cuts must align


def _truncate(path: Path, keep_bytes: int) -> None:
    path.write_bytes(path.read_bytes()[:keep_bytes])


@pytest.fixture
def pair_dir(tmp_path: Path) -> Path:
    """Good pairs plus one of each problem the scan must report."""
    root = tmp_path / "set"
    _write_pair(root, "a.wav", 3.0, seed=1)
    _write_pair(root, "spk/b.flac", 1.5, seed=2)  # shorter than a 2 s segment
    _write_pair(root, "c48.wav", 1.0, rate=48000)
    _write(root / "clean" / "clean_only.wav", _tone(1.0))
    _write(root / "noisy" / "noisy_only.wav", _tone(1.0))
    _write(root / "clean" / "long.wav", _tone(1.0))
    _write(root / "noisy" / "long.wav", _tone(1.1))
    _write(root / "clean" / "stereo.wav", np.stack([_tone(1.0)] * 2, axis=1))
    _write(root / "noisy" / "stereo.wav", np.stack([_tone(1.0)] * 2, axis=1))
    _write_pair(root, "trunc.wav", 1.0)
    _truncate(root / "noisy" / "trunc.wav", 2000)
    _write(root / "clean" / "junk.wav", _tone(1.0))
    (root / "noisy" / "junk.wav").write_text("not audio")
    _write_pair(root, ".hidden.wav", 1.0)  # temp file of an interrupted write: ignored
    return root


def _scan(root: Path, resample: bool = False):
    return scan_pairs(root / "clean", root / "noisy", resample=resample)


def test_scan_reports_every_problem(pair_dir):
    scan = _scan(pair_dir)
    assert [p.name for p in scan.pairs] == ["a.wav", "spk/b.flac"]
    kinds = {(p.kind, p.name) for p in scan.problems}
    assert kinds == {
        ("clean_only", "clean_only.wav"),
        ("noisy_only", "noisy_only.wav"),
        ("length_mismatch", "long.wav"),
        ("multichannel", "clean/stereo.wav"),
        ("multichannel", "noisy/stereo.wav"),
        ("unreadable", "noisy/trunc.wav"),
        ("unreadable", "noisy/junk.wav"),
        ("wrong_rate", "clean/c48.wav"),
        ("wrong_rate", "noisy/c48.wav"),
    }
    trunc = next(p for p in scan.problems if p.name == "noisy/trunc.wav")
    assert "truncated" in trunc.detail
    summary = scan.summary()
    assert "\n" not in summary and "2 usable pair(s)" in summary
    assert "1 clean file(s) without a noisy file: clean_only.wav" in summary
    assert "long.wav (clean 16000 vs noisy 17600 frames)" in summary
    assert "2 file(s) not at 16 kHz" in summary and "48000 Hz" in summary
    assert "--set data.resample=true" in summary and "resample the corpus first" in summary
    assert "2 multichannel file(s)" in summary
    assert "2 unreadable file(s)" in summary


def test_scan_resample_accepts_other_rates(pair_dir):
    scan = _scan(pair_dir, resample=True)
    pair = next(p for p in scan.pairs if p.name == "c48.wav")
    assert (pair.samplerate, pair.frames, pair.length) == (48000, 48000, SR)
    noisy, clean, length = ValidationSet([pair])[0]
    assert noisy.shape == clean.shape == (SR,) and length == SR
    # Linear resampling keeps noisy = 0.5 * clean + 0.01 away from the edges (soxr's transient).
    assert torch.allclose(noisy[200:-200], 0.5 * clean[200:-200] + 0.01, atol=1e-3)


def test_raise_if_empty_and_missing_folder(tmp_path):
    _write(tmp_path / "clean" / "x.wav", _tone(0.5))
    _write(tmp_path / "noisy" / "y.wav", _tone(0.5))
    scan = _scan(tmp_path)
    with pytest.raises(DataError, match=r"no usable training pairs.*x\.wav"):
        scan.raise_if_empty()
    with pytest.raises(DataError, match="noisy folder not found"):
        scan_pairs(tmp_path / "clean", tmp_path / "nope")


def test_find_paired_splits(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        find_paired_splits(tmp_path / "none")
    _write_pair(tmp_path / "train", "a.wav", 1.0)
    with pytest.raises(DataError, match=r"missing: .*valid \(or .*test\)"):
        find_paired_splits(tmp_path)
    (tmp_path / "test" / "clean").mkdir(parents=True)
    (tmp_path / "test" / "noisy").mkdir()
    with pytest.raises(DataError, match="no usable training pairs"):
        find_paired_splits(tmp_path)
    _write_pair(tmp_path / "test", "t.wav", 1.0)
    train, valid = find_paired_splits(tmp_path)
    assert [p.name for p in train.pairs] == ["a.wav"] and valid.clean_dir.parent.name == "test"
    _write_pair(tmp_path / "valid", "v.wav", 1.0)  # preferred over test when both exist
    assert find_paired_splits(tmp_path)[1].clean_dir.parent.name == "valid"


def test_train_cuts_are_seeded_by_epoch_and_index(pair_dir):
    pairs = _scan(pair_dir).pairs
    ds = PairedTrainSet(pairs, segment_seconds=2.0, seed=7)
    noisy, clean, length = ds[0]
    assert noisy.dtype == clean.dtype == torch.float32
    assert noisy.shape == clean.shape == (2 * SR,) and length == 2 * SR
    assert torch.allclose(noisy, 0.5 * clean + 0.01, atol=1e-4)  # same cut in both files
    full = load_mono(AudioFile(pairs[0].clean, SR, pairs[0].frames))
    starts = np.flatnonzero(full == clean[0].item())
    assert any(np.array_equal(full[s : s + 2 * SR], clean.numpy()) for s in starts)

    _, short_clean, short_len = ds[1]  # 1.5 s file: padded at the end
    assert short_len == 24000 and short_clean.shape == (2 * SR,)
    assert not short_clean[24000:].any() and short_clean[:24000].abs().sum() > 0

    again = PairedTrainSet(pairs, segment_seconds=2.0, seed=7)
    assert torch.equal(again[0][1], clean)
    ds.set_epoch(1)
    assert not torch.equal(ds[0][1], clean)
    assert torch.equal(ds[(0, 0)][1], clean)  # explicit (epoch, index) keys ignore set_epoch
    assert not torch.equal(PairedTrainSet(pairs, 2.0, seed=8)[0][1], clean)
    with pytest.raises(IndexError):
        ds[2]
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        PairedTrainSet(pairs, seed=-1)


class _EpochKeys:
    """A sampler wrapper yielding (epoch, index) keys: the recipe for persistent workers."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def __iter__(self):
        return iter([(self.epoch, i) for i in range(self.n)])

    def __len__(self) -> int:
        return self.n


def test_epoch_keys_reach_persistent_workers(pair_dir):
    ds = PairedTrainSet(_scan(pair_dir).pairs, segment_seconds=0.5, seed=1)
    sampler = _EpochKeys(len(ds))
    loader = DataLoader(
        ds,
        sampler=sampler,
        batch_size=2,
        collate_fn=collate_fixed,
        num_workers=1,
        persistent_workers=True,
    )
    for epoch in (0, 1):
        sampler.epoch = epoch  # ds.set_epoch here would not reach the persistent worker
        ds.set_epoch(epoch)
        ((noisy, _, _),) = list(loader)
        assert torch.equal(noisy, torch.stack([ds[0][0], ds[1][0]]))


def _all_items(ds, **loader_kwargs) -> list[torch.Tensor]:
    loader = DataLoader(ds, batch_size=2, collate_fn=collate_fixed, **loader_kwargs)
    return [torch.cat([noisy, clean], dim=1) for noisy, clean, _ in loader]


def _by_index(ds, order: list[int]) -> dict[int, torch.Tensor]:
    return {i: torch.cat([ds[i][0], ds[i][1]]) for i in order}


def test_paired_reproducible_across_workers_and_orders(pair_dir):
    pairs = _scan(pair_dir).pairs * 3  # 6 items
    ds = PairedTrainSet(pairs, segment_seconds=1.0, seed=3)
    ds.set_epoch(2)
    forward = _by_index(ds, list(range(6)))
    twin = PairedTrainSet(pairs, 1.0, seed=3)
    twin.set_epoch(2)
    backward = _by_index(twin, [5, 3, 1, 4, 2, 0])
    assert all(torch.equal(forward[i], backward[i]) for i in range(6))

    sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(11))
    order = list(sampler)
    in_process = _all_items(ds, sampler=order)
    in_workers = _all_items(ds, sampler=order, num_workers=2)
    assert all(torch.equal(a, b) for a, b in zip(in_process, in_workers, strict=True))
    expected = [torch.cat([forward[i] for i in order[k : k + 2]]) for k in range(0, 6, 2)]
    flat = [torch.cat([b[j] for j in range(b.shape[0])]) for b in in_process]
    assert all(torch.equal(a, b) for a, b in zip(flat, expected, strict=True))


def test_distributed_sampler_ranks_see_the_same_items(pair_dir):
    pairs = _scan(pair_dir).pairs * 2
    ds = PairedTrainSet(pairs, segment_seconds=0.5, seed=0)
    reference = _by_index(ds, list(range(len(ds))))
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=5)
        sampler.set_epoch(0)
        batches = _all_items(ds, sampler=sampler)
        indices = list(sampler)
        got = torch.cat([b.reshape(-1) for b in batches])
        assert torch.equal(got, torch.cat([reference[i] for i in indices]))


def test_validation_is_fixed_and_ignores_training_settings(pair_dir):
    pairs = _scan(pair_dir).pairs
    full = ValidationSet(pairs, mode="full")
    assert [item[2] for item in full] == [3 * SR, 24000]
    assert full[0][0].shape == (3 * SR,) and "2 whole files" in full.describe()

    cuts = ValidationSet(pairs, mode="cuts", cut_seconds=1.0, cuts_per_file=2)
    assert [(i, s) for i, s, _ in cuts.items] == [(0, 8000), (0, 24000), (1, 2000), (1, 6000)]
    first = [torch.cat(item[:2]) for item in cuts]
    for segment in (0.5, 2.5):  # the training set's segment length never reaches validation
        train = PairedTrainSet(pairs, segment_seconds=segment)
        train.set_epoch(5)
        _ = train[0]
        cuts.set_epoch(5)
        again = ValidationSet(pairs, mode="cuts", cut_seconds=1.0, cuts_per_file=2)
        for ds in (cuts, again):
            assert all(torch.equal(a, torch.cat(b[:2])) for a, b in zip(first, ds, strict=True))
    assert "4 fixed cuts of 1.00 s" in cuts.describe()

    padded = ValidationSet(pairs, mode="cuts", cut_seconds=2.0)
    assert [item[2] for item in padded] == [2 * SR, 24000]
    noisy, clean, lengths = collate_fixed(list(padded))
    assert noisy.shape == clean.shape == (2, 2 * SR) and lengths.tolist() == [2 * SR, 24000]
    with pytest.raises(ValueError, match="batch_size=1"):
        collate_fixed([full[0], full[1]])
    with pytest.raises(ValueError, match="mode"):
        ValidationSet(pairs, mode="random")


def test_real_vbd_pairs(shared_data):
    scan = _scan(shared_data / "vbd_train6")
    assert len(scan.pairs) == 6 and not scan.problems
    train = PairedTrainSet(scan.pairs, segment_seconds=2.0)
    valid = ValidationSet(scan.pairs, mode="cuts", cut_seconds=3.0)
    noisy, clean, lengths = collate_fixed([train[i] for i in range(6)])
    assert noisy.shape == (6, 2 * SR) and lengths.min() == 31367  # p287_001 is 1.96 s
    assert collate_fixed(list(valid))[0].shape == (6, 3 * SR)
    assert (noisy - clean).abs().max() > 0.01  # really noisy vs clean, not two copies


# ---------------------------------------------------------------- mixing


@pytest.fixture
def mix_files(tmp_path: Path) -> dict[str, list[Path]]:
    speech = [
        _write(tmp_path / "speech" / "s1.wav", _tone(3.0, freq=300, seed=1)),
        _write(tmp_path / "speech" / "sub" / "s2.flac", _tone(1.0, freq=500, seed=2)),
        _write(tmp_path / "speech" / "s3_48k.wav", _tone(2.5, rate=48000, seed=3), 48000),
    ]
    rng = np.random.default_rng(9)
    _write(tmp_path / "noise" / "long48.wav", 0.2 * rng.standard_normal(48000 * 4), 48000)
    _write(tmp_path / "noise" / "short.wav", 0.1 * rng.standard_normal(4000))
    bad = _write(tmp_path / "noise" / "trunc.wav", _tone(1.0))
    _truncate(bad, 3000)
    _write(tmp_path / "noise" / ".tmp.wav", _tone(1.0))
    rir = np.zeros(4000, dtype=np.float32)
    rir[[100, 1700]] = [0.8, 0.4]  # direct path, and a reflection after the 50 ms early part
    return {
        "speech": speech,
        "noise": collect_audio_files(tmp_path / "noise"),
        "rir": [_write(tmp_path / "rir" / "r.wav", rir)],
    }


def test_collect_audio_files(tmp_path, mix_files):
    assert collect_audio_files(tmp_path / "speech") == sorted(mix_files["speech"])
    assert [p.name for p in mix_files["noise"]] == ["long48.wav", "short.wav", "trunc.wav"]
    both = collect_audio_files([tmp_path / "rir", tmp_path / "speech", tmp_path / "rir"])
    assert both[0].name == "r.wav" and len(both) == 4
    with pytest.raises(DataError, match="audio folder not found"):
        collect_audio_files([tmp_path / "missing"])


def test_holdout_split_is_by_name_and_never_empty(tmp_path):
    from mbsnet.train.files import holdout_split

    files = [tmp_path / "a" / f"f{i:02d}.wav" for i in range(40)]
    train, held = holdout_split(files, 0.1, "speech")
    assert len(held) == 4 and len(train) == 36 and not set(train) & set(held)
    assert train == [f for f in files if f in set(train)]  # original order kept
    moved = [tmp_path / "b" / f.name for f in reversed(files)]  # other folder and order
    assert {f.name for f in holdout_split(moved, 0.1, "speech")[1]} == {f.name for f in held}
    assert [len(part) for part in holdout_split(files[:2], 0.01, "noise")] == [1, 1]
    assert len(holdout_split(files[:3], 0.99, "noise")[0]) == 1  # one always left to train
    with pytest.raises(DataError, match="noise: 1 file"):
        holdout_split(files[:1], 0.1, "noise")


def _snr(noisy: np.ndarray, clean: np.ndarray) -> float:
    """Independent check of the documented definition: active 20 ms frames vs whole noise."""
    frames = (clean[: len(clean) // 320 * 320].astype(np.float64) ** 2).reshape(-1, 320).mean(1)
    active = frames[frames >= max(frames.max() * 1e-4, 1e-8)].mean()
    return 10 * np.log10(active / np.mean((noisy.astype(np.float64) - clean) ** 2))


def test_mixing_items(mix_files):
    ds = MixingTrainSet(mix_files["speech"], mix_files["noise"], seed=4, segment_seconds=2.0)
    assert len(ds) == 3
    summary = ds.summary()
    assert "noise: 2 of 3 file(s) usable" in summary and "trunc.wav (truncated" in summary
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            noisy, clean, length = ds[i]
            p = ds.params(i)
            assert noisy.shape == clean.shape == (2 * SR,) and length == 2 * SR
            assert max(noisy.abs().max(), clean.abs().max()) <= 0.99 + 1e-6
            assert abs(_snr(noisy.numpy(), clean.numpy()) - p.snr_db) < 0.5
            rms_db = 10 * np.log10(noisy.double().square().mean().item())
            assert rms_db <= p.level_dbfs + 0.01
    short = next(ds.params((e, 1)) for e in range(20) if ds.params((e, 1)).noise.frames == 4000)
    noise = ds._noise(short)  # 0.25 s of noise looped over the 2 s segment
    assert np.array_equal(noise[:4000], noise[4000:8000])


def test_mixing_reproducible_and_seeded(mix_files):
    def make(seed: int = 0) -> MixingTrainSet:
        return MixingTrainSet(
            mix_files["speech"],
            mix_files["noise"],
            mix_files["rir"],
            seed=seed,
            segment_seconds=1.0,
            rir_probability=0.5,
        )

    ds = make()
    ds.set_epoch(3)
    reference = _by_index(ds, [0, 1, 2])
    twin = make()
    twin.set_epoch(3)
    assert all(torch.equal(reference[i], v) for i, v in _by_index(twin, [2, 0, 1]).items())
    in_workers = _all_items(ds, sampler=[2, 1, 0, 2], num_workers=2)
    assert torch.equal(in_workers[0][0], reference[2]) and torch.equal(
        in_workers[1][0], reference[0]
    )
    ds.set_epoch(4)
    assert not any(torch.equal(reference[i], v) for i, v in _by_index(ds, [0, 1, 2]).items())
    other = make(seed=1)
    other.set_epoch(3)
    assert not any(torch.equal(reference[i], v) for i, v in _by_index(other, [0, 1, 2]).items())


def test_reverb_target_is_the_early_part(mix_files):
    ds = MixingTrainSet(
        mix_files["speech"][:1],
        mix_files["noise"][:1],
        mix_files["rir"],
        rir_probability=1.0,
        snr_db=(80.0, 80.0),
        level_dbfs=(-30.0, -30.0),
        segment_seconds=1.0,
    )
    p = ds.params(0)
    noisy, clean = ds.render(p)
    padded = np.concatenate([np.zeros(1600, dtype=np.float32), load_mono(p.speech)])
    dry = padded[1600 + p.speech_start : 1600 + p.speech_start + SR]
    scale = np.dot(clean, dry) / np.dot(dry, dry)
    # Target = dry speech (direct path only: the reflection lies 100 ms after the peak).
    assert np.allclose(clean, scale * dry, atol=1e-5)
    delayed = padded[p.speech_start : p.speech_start + SR]
    assert np.allclose(noisy, scale * (dry + 0.5 * delayed), atol=1e-3)


def test_mixing_validation_is_fixed(mix_files):
    kwargs = {"n_items": 5, "segment_seconds": 1.5, "rir_probability": 0.5}
    valid = MixingValidationSet(mix_files["speech"], mix_files["noise"], mix_files["rir"], **kwargs)
    first = _by_index(valid, list(range(5)))
    valid.set_epoch(7)
    MixingTrainSet(mix_files["speech"], mix_files["noise"], segment_seconds=0.5).set_epoch(7)
    again = MixingValidationSet(mix_files["speech"], mix_files["noise"], mix_files["rir"], **kwargs)
    for ds in (valid, again):
        assert all(torch.equal(first[i], v) for i, v in _by_index(ds, [4, 3, 2, 1, 0]).items())
    assert first[0].shape == (2 * 24000,)
    assert {valid.params(i).speech.path for i in range(3)} == set(mix_files["speech"])
    assert "5 fixed mixtures, 1.50 s" in valid.describe()


def test_mixing_guards(mix_files, tmp_path):
    silent = _write(tmp_path / "silent" / "s.wav", np.zeros(SR, dtype=np.float32))
    ds = MixingTrainSet([silent], mix_files["noise"][:1], segment_seconds=0.5)
    noisy, clean, _ = ds[0]
    assert torch.isfinite(noisy).all() and not clean.any() and noisy.abs().max() > 0
    assert active_power(np.zeros(SR, dtype=np.float32)) == 0.0
    with pytest.raises(DataError, match="no usable noise files"):
        MixingTrainSet(mix_files["speech"], mix_files["noise"][2:])
    with pytest.raises(DataError, match="RIR files given but none usable"):
        MixingTrainSet(mix_files["speech"], mix_files["noise"], mix_files["noise"][2:])
    nan = tmp_path / "n.wav"
    sf.write(nan, np.full(SR, np.nan, dtype=np.float32), SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        MixingTrainSet([nan], mix_files["noise"][:1], segment_seconds=0.5)[0]


def test_read_region_matches_full_load(mix_files):
    long48 = AudioFile(mix_files["noise"][0], 48000, 48000 * 4)
    full = load_mono(long48)
    region = read_region(long48, 20000, 8000)
    assert region.shape == (8000,)
    assert np.abs(region - full[20000:28000]).max() < 1e-5  # in phase with a whole-file load


def test_real_mixtures(shared_data):
    speech = collect_audio_files(shared_data / "speech/librispeech/train-clean-100")[:4]
    noise = collect_audio_files([shared_data / "noise/speechbrain", shared_data / "noise/alsa"])
    rirs = collect_audio_files(shared_data / "rir/speechbrain")
    dry = MixingTrainSet(speech, noise, seed=2)
    for i in range(len(dry)):
        noisy, clean, _ = dry[i]
        assert abs(_snr(noisy.numpy(), clean.numpy()) - dry.params(i).snr_db) < 0.5
        assert noisy.abs().max() <= 0.99 + 1e-6
    wet = MixingValidationSet(speech, noise, rirs, rir_probability=1.0, n_items=4)
    for noisy, clean, _ in wet:
        assert noisy.shape == (4 * SR,) and max(noisy.abs().max(), clean.abs().max()) <= 0.99 + 1e-6
        assert torch.isfinite(noisy).all() and clean.abs().max() > 0


def test_package_import_stays_torch_free():
    """`mbsnet.train` resolves names lazily, so torch-free worker modules stay torch-free."""
    code = "import sys, mbsnet.train.files; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_eq_filter_follows_its_gains():
    flat = eq_filter([0.0] * EQ_BANDS)
    assert flat.shape == (511,) and abs(np.abs(np.fft.rfft(flat, 4096)).mean() - 1) < 0.02
    gains = [6.0, -6.0, 3.0, -3.0, 0.0, 6.0]
    response = np.abs(np.fft.rfft(eq_filter(gains), 8192))
    freqs = np.fft.rfftfreq(8192, 1 / SR)
    for gain, centre in zip(gains, np.geomspace(*EQ_RANGE_HZ, EQ_BANDS), strict=True):
        measured = 20 * np.log10(response[np.argmin(np.abs(freqs - centre))])
        assert abs(measured - gain) < 1.5, (centre, measured, gain)
    assert np.allclose(eq_filter(gains), eq_filter(gains)[::-1])  # linear phase


def test_eq_colours_input_and_target_alike_and_leaves_other_mixtures(mix_files):
    plain = MixingTrainSet(mix_files["speech"], mix_files["noise"], seed=3, segment_seconds=1.0)
    eq = MixingTrainSet(
        mix_files["speech"], mix_files["noise"], seed=3, segment_seconds=1.0,
        eq_probability=1.0, eq_db=9.0,
    )  # fmt: skip
    for i in range(len(plain)):
        a, b = plain.params(i), eq.params(i)
        assert b.eq_db is not None and max(map(abs, b.eq_db)) <= 9.0
        assert dataclasses.replace(b, eq_db=None) == a  # every other choice unchanged
        noisy_a, clean_a = plain.render(a)
        noisy_b, clean_b = eq.render(b)
        assert not np.allclose(clean_a, clean_b)
        # the same filter on both: noisy - clean (the noise) is filtered like the speech
        fir = eq_filter(b.eq_db)
        expect = np.convolve(clean_a, fir, "same")
        scale = np.dot(clean_b, expect) / np.dot(expect, expect)
        assert np.allclose(clean_b, scale * expect, atol=1e-4)
        assert np.allclose(noisy_b, scale * np.convolve(noisy_a, fir, "same"), atol=1e-4)
    assert "EQ p=1.00 +-9 dB" in eq.describe() and "EQ" not in plain.describe()


def test_noise_tilt_colours_the_noise_alone_and_leaves_other_mixtures(mix_files):
    plain = MixingTrainSet(mix_files["speech"], mix_files["noise"], seed=3, segment_seconds=1.0)
    tilted = MixingTrainSet(
        mix_files["speech"], mix_files["noise"], seed=3, segment_seconds=1.0,
        noise_tilt_probability=1.0, noise_tilt_db_per_octave=(-9.0, -6.0),
    )  # fmt: skip
    for i in range(len(plain)):
        a, b = plain.params(i), tilted.params(i)
        assert b.noise_tilt is not None and -9.0 <= b.noise_tilt <= -6.0
        assert dataclasses.replace(b, noise_tilt=None) == a  # every other choice unchanged
        noisy_a, clean_a = plain.render(a)
        noisy_b, clean_b = tilted.render(b)
        # the target is untouched up to the level gain; the SNR is set after the tilt
        scale = np.dot(clean_b, clean_a) / np.dot(clean_a, clean_a)
        assert np.allclose(clean_b, scale * clean_a, atol=1e-5)
        assert abs(_snr(noisy_b, clean_b) - b.snr_db) < 0.5
        # the noise lost its highs against its lows: a tilt of <= -6 dB/octave
        def high_to_low(x):
            spec = np.abs(np.fft.rfft(x)) ** 2
            f = np.fft.rfftfreq(len(x), 1 / SR)
            return spec[(f > 3000) & (f < 7000)].sum() / spec[(f > 150) & (f < 700)].sum()

        drop = 10 * np.log10(high_to_low(noisy_b - clean_b) / high_to_low(noisy_a - clean_a))
        assert drop < -12.0
    assert "noise tilt p=1.00 U(-9, -6) dB/octave" in tilted.describe()
    assert np.allclose(tilt_gains(0.0), 0.0)
    assert tilt_gains(-6.0)[0] > 0 > tilt_gains(-6.0)[-1]


def test_noise_lowpass_band_limits_the_noise_alone_and_leaves_other_mixtures(mix_files):
    plain = MixingTrainSet(mix_files["speech"], mix_files["noise"], seed=3, segment_seconds=1.0)
    lowpassed = MixingTrainSet(
        mix_files["speech"], mix_files["noise"], seed=3, segment_seconds=1.0,
        noise_lowpass_probability=1.0, noise_lowpass_hz=(200.0, 400.0),
    )  # fmt: skip
    for i in range(len(plain)):
        a, b = plain.params(i), lowpassed.params(i)
        assert b.noise_lowpass_hz is not None and 200.0 <= b.noise_lowpass_hz <= 400.0
        assert dataclasses.replace(b, noise_lowpass_hz=None) == a  # every other choice unchanged
        _, clean_a = plain.render(a)
        noisy_b, clean_b = lowpassed.render(b)
        scale = np.dot(clean_b, clean_a) / np.dot(clean_a, clean_a)
        assert np.allclose(clean_b, scale * clean_a, atol=1e-5)
        assert abs(_snr(noisy_b, clean_b) - b.snr_db) < 0.5  # the SNR is set after the low-pass
        spec = np.abs(np.fft.rfft(noisy_b - clean_b)) ** 2
        f = np.fft.rfftfreq(len(clean_b), 1 / SR)
        # two octaves above 400 Hz and higher: at least 90 dB down on the passband
        ratio = spec[f > 1600].sum() / spec[(f > 20) & (f < 200)].sum()
        assert 10 * np.log10(ratio) < -60.0
    assert np.allclose(lowpass_gains(1000.0, 16000)[:1001], 1.0)  # passband: 1 Hz bins
    assert np.isclose(20 * np.log10(lowpass_gains(1000.0, 16000)[2000]), -48.0)
    assert "noise low-pass p=1.00 at 200-400 Hz" in lowpassed.describe()
    assert "low-pass" not in plain.describe()
    with pytest.raises(ValueError, match="noise_lowpass_hz"):
        MixingTrainSet(mix_files["speech"], mix_files["noise"], seed=3, segment_seconds=1.0,
                       noise_lowpass_hz=(100.0, 9000.0))  # fmt: skip


def test_noise_focus_draws_matching_noise_and_leaves_other_choices(mix_files):
    speech, noise = mix_files["speech"], mix_files["noise"]
    plain = MixingTrainSet(speech, noise, seed=4, segment_seconds=1.0)
    focused = MixingTrainSet(speech, noise, seed=4, segment_seconds=1.0,
                             noise_focus_glob="short*", noise_focus_probability=1.0)  # fmt: skip
    half = MixingTrainSet(speech, noise, seed=4, segment_seconds=1.0,
                          noise_focus_glob="short*", noise_focus_probability=0.5)  # fmt: skip
    picked = []
    for epoch in range(8):
        for ds in (plain, focused, half):
            ds.set_epoch(epoch)
        for i in range(len(plain)):
            a, b, c = plain.params(i), focused.params(i), half.params(i)
            assert b.noise.path.name == "short.wav"
            # every other choice is the plain set's
            assert dataclasses.replace(b, noise=a.noise, noise_start=a.noise_start) == a
            assert c in (a, dataclasses.replace(b, noise=c.noise, noise_start=c.noise_start))
            picked.append(c != a)
    assert 0.2 < np.mean(picked) < 0.8  # p = 0.5 (short.wav is also drawn plainly sometimes)
    assert "noise from 1 files matching 'short*' p=1.00" in focused.describe()
    assert "matching" not in plain.describe()
    with pytest.raises(DataError, match="matches no training noise file"):
        MixingTrainSet(speech, noise, seed=4, segment_seconds=1.0,
                       noise_focus_glob="demand*", noise_focus_probability=0.2)  # fmt: skip


def test_noiseless_items_are_the_speech_alone(mix_files):
    ds = MixingTrainSet(
        mix_files["speech"], mix_files["noise"], seed=5, segment_seconds=1.0,
        noiseless_probability=1.0, rir_probability=0.0,
    )  # fmt: skip
    for i in range(len(ds)):
        noisy, clean, _ = ds[i]
        assert ds.params(i).noiseless and torch.equal(noisy, clean)
    assert "noiseless p=1.00" in ds.describe()
    with pytest.raises(ValueError, match="noiseless_probability"):
        MixingTrainSet(mix_files["speech"], mix_files["noise"], noiseless_probability=1.5)


def test_speech_sampling_by_duration_weights_long_files(mix_files):
    by_file = MixingTrainSet(mix_files["speech"], mix_files["noise"], seed=6, segment_seconds=0.5)
    by_duration = MixingTrainSet(
        mix_files["speech"], mix_files["noise"], seed=6, segment_seconds=0.5,
        speech_sampling="duration",
    )  # fmt: skip
    # 3.0 s, 1.0 s and 2.5 s of speech in 0.5 s segments: 6 + 2 + 5 mixtures per epoch.
    assert len(by_file) == 3 and len(by_duration) == 13
    names = [by_duration.params(i).speech.path.name for i in range(len(by_duration))]
    files = [f.path.name for f in by_duration.speech_scan.files]
    assert names == [files[0]] * 6 + [files[1]] * 2 + [files[2]] * 5
    # Each mixture cuts its own segment of the file, seeded by (epoch, index).
    starts = {by_duration.params(i).speech_start for i in range(6)}
    assert len(starts) > 1
    by_duration.set_epoch(2)
    assert by_duration.params(3) == by_duration.params((2, 3)) != by_duration.params((1, 3))
    # "file" keeps the mixtures of runs made before the option existed.
    assert by_file.params(1).speech.path.name == files[1]
    assert "one per segment of speech, 3 files" in by_duration.describe()
    assert "13 mixtures per epoch" in by_duration.describe()
    with pytest.raises(ValueError, match="speech_sampling"):
        MixingTrainSet(mix_files["speech"], mix_files["noise"], speech_sampling="minutes")
