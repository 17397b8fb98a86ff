"""The speech screen of scripts/screen_noise.py: flags real speech, passes stationary noise."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from tests.conftest import REPO_ROOT, load_script


def _screen():
    return load_script('screen_noise')


def test_flags_speech_and_not_stationary_noise():
    screen = _screen()
    assert sf.info(REPO_ROOT / "examples" / "clean_p232_005.wav").samplerate == screen.RATE
    speech = screen.windows(REPO_ROOT / "examples" / "clean_p232_005.wav")
    assert speech and np.mean([screen.flagged(w) for w in speech]) >= 0.5
    noise = screen.stationary_windows(20)
    assert not any(screen.flagged(w) for w in noise)
    assert screen.voiced_share(np.zeros(screen.WINDOW, np.float32)) == 0.0
