"""audio.py and atomic.py: reading refuses bad files with one-line errors; writing is atomic."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mbsnet.atomic import atomic_path
from mbsnet.audio import AudioError, AudioInfo, is_silent, read_audio, resample, write_audio


def make_signal(sr: int, channels: int = 1, seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    """Sine (a different pitch per channel) plus a little noise, (C, N) float32 within ±0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(sr * seconds)) / sr
    rows = [0.3 * np.sin(2 * np.pi * (440 + 110 * c) * t) for c in range(channels)]
    x = np.stack(rows) + 0.02 * rng.standard_normal((channels, t.size))
    return x.astype(np.float32)


def write_fixture(
    path: Path, sr: int = 16000, channels: int = 1, subtype: str = "PCM_16", seconds: float = 0.5
) -> np.ndarray:
    x = make_signal(sr, channels, seconds)
    sf.write(str(path), x.T, sr, subtype=subtype)
    return x


def assert_one_line(err: Exception, path: Path, *words: str) -> None:
    text = str(err)
    assert "\n" not in text
    assert text.startswith(f"{path}: ")
    for word in words:
        assert word in text, text


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".tmp-" in p.name]


# --- read_audio: good files -------------------------------------------------------------


@pytest.mark.parametrize(
    ("sr", "channels", "subtype", "suffix", "tol"),
    [
        (8000, 1, "PCM_16", ".wav", 1e-4),
        (16000, 2, "PCM_24", ".wav", 1e-6),
        (44100, 1, "FLOAT", ".wav", 0.0),
        (48000, 2, "PCM_16", ".flac", 1e-4),
    ],
)
def test_read_audio_shapes_and_info(tmp_path, sr, channels, subtype, suffix, tol):
    path = tmp_path / f"x{suffix}"
    x = write_fixture(path, sr, channels, subtype)
    y, info = read_audio(path)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert y.flags.c_contiguous
    fmt = "FLAC" if suffix == ".flac" else "WAV"
    assert info == AudioInfo(sr, channels, x.shape[1], subtype, fmt)
    assert np.max(np.abs(y - x)) <= tol


def test_read_real_recording(shared_data):
    path = shared_data / "vbd_test25/noisy/p232_003.wav"
    y, info = read_audio(path)
    assert info.samplerate == 16000 and info.channels == 1 and y.shape == (1, info.frames)
    assert not is_silent(y) and np.isfinite(y).all()


def test_streamed_wav_with_unknown_data_size_is_accepted(tmp_path):
    # Streaming writers put 0xFFFFFFFF in the data size; that is not truncation.
    path = tmp_path / "streamed.wav"
    write_fixture(path)
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    y, info = read_audio(path)
    assert y.shape == (1, 8000) and info.frames == 8000


# --- read_audio: every refusal is one line naming the file ------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError) as exc:
        read_audio(path)
    assert_one_line(exc.value, path, "not found")


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioError) as exc:
        read_audio(tmp_path)
    assert_one_line(exc.value, tmp_path, "directory")


def test_non_audio_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are\nmeeting notes, not audio\n" * 20)
    with pytest.raises(AudioError) as exc:
        read_audio(path)
    assert_one_line(exc.value, path, "not a readable audio file", "Format not recognised")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    with pytest.raises(AudioError) as exc:
        read_audio(path)
    assert_one_line(exc.value, path, "empty", "0 bytes")


def test_zero_frame_wav(tmp_path):
    path = tmp_path / "noframes.wav"
    sf.write(str(path), np.zeros((0, 1), np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError) as exc:
        read_audio(path)
    assert_one_line(exc.value, path, "empty", "0 audio samples")


@pytest.mark.parametrize("keep", [0.5, 0.75])
def test_truncated_wav(tmp_path, keep):
    # libsndfile itself would read such a file silently short (7989 of 16000 frames).
    path = tmp_path / "cut.wav"
    write_fixture(path, seconds=1.0)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) | 1])  # odd length: cut mid-sample too
    with pytest.raises(AudioError) as exc:
        read_audio(path)
    assert_one_line(exc.value, path, "truncated", "32000 bytes")


def test_truncated_flac(tmp_path):
    path = tmp_path / "cut.flac"
    write_fixture(path, seconds=1.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError) as exc:
        read_audio(path)
    assert_one_line(exc.value, path, "truncated or corrupt")


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ([np.nan] * 3, "3 NaN"),
        ([np.inf, -np.inf], "2 Inf"),
        ([np.nan, np.inf], "1 NaN and 1 Inf"),
    ],
)
def test_non_finite_samples(tmp_path, bad, expected):
    path = tmp_path / "bad.wav"
    x = make_signal(16000, channels=2)
    x[1, 100 : 100 + len(bad)] = bad
    sf.write(str(path), x.T, 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as exc:
        read_audio(path)
    assert_one_line(exc.value, path, f"contains {expected} samples")


def test_audio_error_is_one_line_even_for_multiline_problems():
    err = AudioError("a b.wav", "first\nsecond\tthird")
    assert str(err) == "a b.wav: first second third"
    assert err.path == Path("a b.wav") and err.problem == "first second third"


def test_is_silent():
    assert is_silent(np.zeros((2, 100), np.float32))
    x = np.zeros((2, 100), np.float32)
    x[1, 50] = 1e-9
    assert not is_silent(x)


# --- resample -----------------------------------------------------------------------


def test_resample_identity_and_dtype():
    x = make_signal(16000, 2)
    y = resample(x, 16000, 16000)
    assert y.dtype == np.float32 and np.array_equal(x, y)


@pytest.mark.parametrize("sr", [8000, 44100, 48000])
def test_resample_round_trip_keeps_length_and_signal(sr):
    x = make_signal(sr, 2, seconds=0.37)
    y16 = resample(x, sr, 16000)
    assert y16.dtype == np.float32 and y16.shape[0] == 2
    assert abs(y16.shape[1] - x.shape[1] * 16000 / sr) <= 1
    back = resample(y16, 16000, sr, length=x.shape[1])
    assert back.shape == x.shape and back.dtype == np.float32
    # The tones survive (the 16 kHz detour only drops the noise above 8 kHz, which bounds
    # the SNR near 22 dB for 48 kHz input); edges are skipped for the filter transients.
    core = slice(sr // 20, -sr // 20)
    err = back[:, core] - x[:, core]
    snr = 10 * np.log10(np.sum(x[:, core] ** 2) / np.sum(err**2))
    assert snr > 15, snr


def test_resample_length_pads_and_crops():
    x = make_signal(16000, 1)
    assert resample(x, 16000, 16000, length=100).shape == (1, 100)
    padded = resample(x, 16000, 16000, length=x.shape[1] + 10)
    assert padded.shape == (1, x.shape[1] + 10) and not padded[:, -10:].any()


# --- write_audio and atomic_path ----------------------------------------------------


@pytest.mark.parametrize(("subtype", "suffix"), [("PCM_16", ".wav"), ("PCM_24", ".flac")])
def test_write_clips_integer_pcm_instead_of_wrapping(tmp_path, subtype, suffix):
    path = tmp_path / f"loud{suffix}"
    x = np.array([[0.5, 1.5, -1.5, 1.0, -1.0]], np.float32)
    clipped = write_audio(path, x, 16000, subtype=subtype)
    y, info = read_audio(path)
    assert clipped == 2 and info.subtype == subtype
    assert y[0, 1] > 0.99 and y[0, 2] <= -0.99  # wrapped values would flip sign
    assert no_temp_files(tmp_path)


def test_write_float_is_not_clipped(tmp_path):
    path = tmp_path / "loud.wav"
    x = np.array([[0.5, 1.5, -2.0]], np.float32)
    assert write_audio(path, x, 16000, subtype="FLOAT", format="WAV") == 0
    y, _ = read_audio(path)
    assert np.array_equal(y, x)


@pytest.mark.parametrize(("subtype", "fmt"), [("PCM_24", "WAV"), ("PCM_16", "FLAC")])
def test_write_keeps_subtype_and_format(tmp_path, subtype, fmt):
    path = tmp_path / "out.audio"  # extension says nothing: the format argument decides
    x = make_signal(48000, 2)
    write_audio(path, x, 48000, subtype=subtype, format=fmt)
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.samplerate, info.channels) == (fmt, subtype, 48000, 2)


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.flac"
    write_audio(path, make_signal(16000), 16000, subtype="PCM_16")
    before = path.read_bytes()
    with pytest.raises(AudioError) as exc:  # FLAC cannot hold FLOAT samples
        write_audio(path, make_signal(16000), 16000, subtype="FLOAT", format="FLAC")
    assert_one_line(exc.value, path, "cannot write")
    assert path.read_bytes() == before
    assert no_temp_files(tmp_path)


def test_write_into_missing_folder_is_an_audio_error(tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "out.wav"
    with pytest.raises(AudioError) as exc:
        write_audio(path, make_signal(16000), 16000)
    assert_one_line(exc.value, path, "cannot write")


def test_atomic_path_success_replaces_and_keeps_mode(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".model.pt.tmp-")
        assert tmp.suffix == ".pt" and tmp.exists()
        tmp.write_bytes(b"new")
        assert path.read_bytes() == b"old"  # untouched until the block ends
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_atomic_path_failure_keeps_old_file_and_removes_temp(tmp_path, exc_type):
    path = tmp_path / "out.wav"
    path.write_bytes(b"precious")
    with pytest.raises(exc_type), atomic_path(path) as tmp:
        tmp.write_bytes(b"half a fi")
        raise exc_type("disk full")
    assert path.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


def test_atomic_path_onto_directory_fails_cleanly(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep").write_text("x")
    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.write_bytes(b"data")
    assert (target / "keep").exists() and no_temp_files(tmp_path)


def test_pcm16_is_rounded_to_nearest_not_floored(tmp_path):
    """libsndfile floors float -> 16-bit PCM; write_audio rounds (a read-write round trip of a
    file read as float, then nudged by float error, gives the same samples back)."""
    steps = np.array([5 - 0.001, 5 + 0.001, -5 + 0.001, -5 - 0.001, 5.4, 5.6, -32768.2, 32767.4])
    write_audio(tmp_path / "x.wav", (steps / 32768).astype(np.float32)[None], 16000,
                subtype="PCM_16")  # fmt: skip
    back, _ = read_audio(tmp_path / "x.wav")
    assert (back[0] * 32768).astype(int).tolist() == [5, 5, -5, -5, 5, 6, -32768, 32767]
