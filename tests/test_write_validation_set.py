"""scripts/write_validation_set.py writes a run's validation items exactly, sample for sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from mbsnet import SAMPLE_RATE
from mbsnet.train.config import TrainConfig
from mbsnet.train.run import build_datasets
from tests.conftest import load_script


def _script():
    return load_script('write_validation_set')


def _write_tones(folder: Path, count: int, seconds: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    for i in range(count):
        tone = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(folder / f"f{i}.wav", tone.astype(np.float32), SAMPLE_RATE)


def test_written_items_equal_the_runs_validation_items(tmp_path):
    for role, seed in (("speech", 1), ("noise", 2), ("valid_speech", 3), ("valid_noise", 4)):
        _write_tones(tmp_path / role, 2, 3.0, seed)
    cfg = TrainConfig.defaults().apply_overrides([
        "data.mode=mixing", "validation.mixing_items=3", "validation.cut_seconds=1.0",
        *(f'data.{role}_dirs=["{tmp_path / role}"]'
          for role in ("speech", "noise", "valid_speech", "valid_noise")),
    ])  # fmt: skip
    out = tmp_path / "valid"
    assert _script().write_validation_set(cfg, out) == 3
    _, valid = build_datasets(cfg)
    for index in range(3):
        noisy, clean, length = valid[index]
        for sub, expected in (("noisy", noisy), ("clean", clean)):
            written, rate = sf.read(out / sub / f"v{index:03d}.wav", dtype="float32")
            assert rate == SAMPLE_RATE
            assert np.array_equal(written, expected[:length].numpy())
    assert sorted(p.name for p in (out / "noisy").iterdir()) == ["v000.wav", "v001.wav", "v002.wav"]


def test_training_file_mixtures_use_the_training_files_only(tmp_path):
    for role, seed in (("speech", 1), ("noise", 2), ("valid_speech", 3), ("valid_noise", 4)):
        _write_tones(tmp_path / role, 2, 3.0, seed)
    dirs = [f'data.{role}_dirs=["{tmp_path / role}"]' for role in ("speech", "noise")]
    common = ["data.mode=mixing", "validation.mixing_items=3", "validation.cut_seconds=1.0"]
    cfg = TrainConfig.defaults().apply_overrides([*common, *dirs, *(
        f'data.valid_{role}_dirs=["{tmp_path / ("valid_" + role)}"]' for role in ("speech", "noise")
    )])  # fmt: skip
    out = tmp_path / "train_items"
    assert _script().write_validation_set(cfg, out, training_files=True) == 3
    # The same items as validation mixtures whose held-out files are the training files.
    as_valid = TrainConfig.defaults().apply_overrides([*common, *dirs, *(
        f'data.valid_{role}_dirs=["{tmp_path / role}"]' for role in ("speech", "noise")
    )])  # fmt: skip
    _, expected_set = build_datasets(as_valid)
    _, held_out = build_datasets(cfg)
    for index in range(3):
        noisy, _, length = expected_set[index]
        written, _ = sf.read(out / "noisy" / f"t{index:03d}.wav", dtype="float32")
        assert np.array_equal(written, noisy[:length].numpy())
        assert not np.array_equal(written, held_out[index][0][:length].numpy())
