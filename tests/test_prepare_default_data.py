"""scripts/prepare_default_data.py keeps only real speech as clean training targets."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from mbsnet import SAMPLE_RATE
from tests.conftest import load_script


def _write(path, wave):
    sf.write(path, wave.astype(np.float32), SAMPLE_RATE)
    return path


def test_speech_problem_names_silent_non_speech_and_flagged_files(tmp_path):
    script = load_script("prepare_default_data")
    rng = np.random.default_rng(0)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    speech = _write(tmp_path / "prompt.wav", 0.3 * np.sin(2 * np.pi * 220 * t))
    hiss = _write(tmp_path / "7.wav", 1e-4 * rng.standard_normal(SAMPLE_RATE))  # -80 dBFS
    quiet = _write(tmp_path / "quiet.wav", 0.002 * np.sin(2 * np.pi * 220 * t))  # peak -54 dBFS
    monkeys = _write(tmp_path / "tt-monkeys.wav", 0.3 * rng.standard_normal(SAMPLE_RATE))
    flagged = _write(tmp_path / f"{sorted(script.FLAGGED_SPEECH)[0]}.wav", 0.3 * np.sin(t))
    problem = script._speech_problem
    assert problem(speech, SAMPLE_RATE) == ""
    assert problem(quiet, SAMPLE_RATE) == ""  # quiet speech is still speech
    assert problem(hiss, SAMPLE_RATE).startswith("silent")
    assert problem(monkeys, SAMPLE_RATE).startswith("not speech")
    assert problem(flagged, SAMPLE_RATE) == "flagged background"
    assert problem(speech, 8000) == "not 16 kHz"
