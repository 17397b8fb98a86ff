"""scripts/level_by_depth.py: level change of speech frames, binned by depth below the loudest."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from tests.conftest import load_script


def _tone(amplitude: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * 1000 * t)


def test_reads_zero_for_untouched_audio_and_the_cut_where_quiet_frames_were_cut(tmp_path):
    script = load_script("level_by_depth")
    rate = script.RATE
    # a loud second, then a second 25 dB down: the second's frames fall in the 20-30 dB bin
    loud, quiet = _tone(0.5, 1.0, rate), _tone(0.5 * 10 ** (-25 / 20), 1.0, rate)
    clean = np.concatenate([loud, quiet])
    gated = np.concatenate([loud, quiet * 10 ** (-6 / 20)])  # the quiet second cut by 6 dB
    for folder, audio in (("clean", clean), ("same", clean), ("gated", gated)):
        (tmp_path / folder).mkdir()
        sf.write(tmp_path / folder / "a.wav", audio, rate, subtype="FLOAT")
    systems = {"same": tmp_path / "same", "gated": tmp_path / "gated"}
    rows = script.table(tmp_path / "clean", systems)
    by_bin = {depth: (frames, means) for depth, frames, means in rows}
    frames, (same, cut) = by_bin["0-10"]
    assert frames > 50 and abs(same) < 1e-6 and abs(cut) < 0.2
    frames, (same, cut) = by_bin["20-30"]
    assert frames > 50 and abs(same) < 1e-6 and abs(cut + 6.0) < 0.5
