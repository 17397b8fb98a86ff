"""Pairing noisy and clean files: nested names, unmatched files, length mismatches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mbsnet.eval.pairs import (
    LengthMismatch,
    PairingError,
    find_pairs,
    find_test_dir_pairs,
    missing_enhanced,
)


def _write(path: Path, frames: int = 1600, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(frames, dtype=np.float32), rate)


@pytest.fixture
def test_dir(tmp_path: Path) -> Path:
    for side in ("noisy", "clean"):
        _write(tmp_path / side / "a.wav")
        _write(tmp_path / side / "spk1" / "b.flac")
        _write(tmp_path / side / "spk2" / "deep" / "c.WAV")
        _write(tmp_path / side / ".hidden.wav")  # temp files of interrupted writes: ignored
    _write(tmp_path / "noisy" / "only_noisy.wav")
    _write(tmp_path / "noisy" / "spk1" / "b.wav")  # same stem, other extension: no match
    _write(tmp_path / "clean" / "spk2" / "only_clean.wav")
    _write(tmp_path / "noisy" / "long.wav", frames=1700)
    _write(tmp_path / "clean" / "long.wav", frames=1600)
    _write(tmp_path / "noisy" / "rate.wav", frames=800, rate=8000)  # other rate: not compared
    _write(tmp_path / "clean" / "rate.wav", frames=1600, rate=16000)
    (tmp_path / "noisy" / "notes.txt").write_text("not audio")
    return tmp_path


def test_nested_unmatched_and_mismatched(test_dir):
    result = find_test_dir_pairs(test_dir)
    names = [pair.name for pair in result.pairs]
    assert names == ["a.wav", "long.wav", "rate.wav", "spk1/b.flac", "spk2/deep/c.WAV"]
    for pair in result.pairs:
        assert pair.noisy == test_dir / "noisy" / pair.name
        assert pair.clean == test_dir / "clean" / pair.name
    assert result.noisy_only == ["only_noisy.wav", "spk1/b.wav"]
    assert result.clean_only == ["spk2/only_clean.wav"]
    assert result.length_mismatch == [LengthMismatch("long.wav", 1700, 1600)]

    warnings = result.warnings()
    assert len(warnings) == 3
    assert warnings[0].startswith("2 noisy file(s)") and "only_noisy.wav, spk1/b.wav" in warnings[0]
    assert warnings[1].startswith("1 clean file(s)") and "spk2/only_clean.wav" in warnings[1]
    assert "long.wav (1700 vs 1600)" in warnings[2]
    assert result.to_json_dict() == {
        "noisy_only": ["only_noisy.wav", "spk1/b.wav"],
        "clean_only": ["spk2/only_clean.wav"],
        "length_mismatch": [{"file": "long.wav", "noisy_frames": 1700, "clean_frames": 1600}],
    }


def test_separate_dirs_and_long_name_lists(tmp_path):
    for i in range(13):
        _write(tmp_path / "n" / f"{i:02d}.wav")
    _write(tmp_path / "c" / "00.wav")
    result = find_pairs(tmp_path / "n", tmp_path / "c")
    assert [pair.name for pair in result.pairs] == ["00.wav"]
    assert len(result.noisy_only) == 12
    assert result.warnings()[0].endswith("... (2 more)")
    assert result.warnings()[0].startswith("12 noisy file(s)")


def test_damaged_header_is_kept_for_the_evaluation(tmp_path):
    _write(tmp_path / "clean" / "x.wav")
    (tmp_path / "noisy").mkdir()
    (tmp_path / "noisy" / "x.wav").write_bytes(b"RIFF garbage")
    result = find_test_dir_pairs(tmp_path)
    assert [pair.name for pair in result.pairs] == ["x.wav"]
    assert result.warnings() == []


def test_errors(tmp_path):
    with pytest.raises(PairingError, match="test folder not found"):
        find_test_dir_pairs(tmp_path / "missing")
    (tmp_path / "noisy").mkdir()
    with pytest.raises(PairingError, match="clean folder not found"):
        find_test_dir_pairs(tmp_path)
    _write(tmp_path / "noisy" / "a.wav")
    _write(tmp_path / "clean" / "b.wav")
    with pytest.raises(PairingError, match="no pairs: 1 audio file"):
        find_test_dir_pairs(tmp_path)


def test_missing_enhanced(test_dir, tmp_path):
    pairs = find_test_dir_pairs(test_dir).pairs
    enhanced = tmp_path / "enhanced"
    _write(enhanced / "a.wav")
    _write(enhanced / "spk1" / "b.flac")
    assert missing_enhanced(pairs, enhanced) == ["long.wav", "rate.wav", "spk2/deep/c.WAV"]
