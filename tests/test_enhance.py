"""enhance/: chunked tensor enhancement, file round trips, folder runs that survive bad files."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from mbsnet.audio import AudioError, read_audio
from mbsnet.checkpoint import model_from_checkpoint, save_checkpoint
from mbsnet.enhance import (
    chunk_bounds,
    collect_inputs,
    enhance_file,
    enhance_paths,
    enhance_waveform,
    plan_outputs,
)
from mbsnet.enhance.chunking import frame_hop
from mbsnet.models import create_model, preset_config
from mbsnet.models.level import level_scale

SR = 16000


class StandIn(nn.Module):
    """Cheap model with the real API: level-normalize, short causal+anticausal conv, tanh."""

    ARCH = "standin"
    sample_rate = SR
    min_samples = 512

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size=65, padding=32)
        self.calls: list[tuple[int, torch.Tensor]] = []

    def forward(self, wave: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        if scale is None:
            scale = level_scale(wave)
        self.calls.append((wave.shape[-1], scale.clone()))
        return torch.tanh(self.conv((wave * scale)[:, None]))[:, 0] / scale


class Identity(StandIn):
    def forward(self, wave: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append((wave.shape[-1], scale.clone()))
        return wave * scale / scale


class Exploding(StandIn):
    def forward(self, wave: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        return torch.full_like(wave, float("nan"))


class Interrupting(StandIn):
    def forward(self, wave: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        raise KeyboardInterrupt


def signal(n: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / SR
    tones = torch.stack(
        [0.3 * torch.sin(2 * torch.pi * (200 + 150 * c) * t) for c in range(channels)]
    )
    return (tones + 0.05 * torch.randn(channels, n, generator=gen)).float()


def write_wav(path: Path, sr: int = SR, channels: int = 1, seconds: float = 0.5, **kw) -> Path:
    x = signal(round(sr * seconds), channels).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.T, sr, **kw)
    return path


def snr_db(ref: torch.Tensor, est: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - est).pow(2).sum()))


@pytest.fixture
def model() -> StandIn:
    return StandIn().eval()


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    """The real tiny MBS-Net with random weights (untrained: tests mechanics, not quality)."""
    torch.manual_seed(0)
    return create_model("mbsnet", preset_config("tiny")).eval()


# --- chunk_bounds / enhance_waveform --------------------------------------------------


@pytest.mark.parametrize("n", [1000, 4000, 4001, 5000, 9999, 10000, 10001, 123457])
def test_chunk_bounds_cover_with_exact_overlap(n):
    chunk, overlap, min_len = 4000, 1000, 1500
    bounds = chunk_bounds(n, chunk, overlap, min_len)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    for (_, e0), (s1, _) in itertools.pairwise(bounds):
        assert e0 - s1 == overlap  # neighbours overlap by exactly the cross-fade length
    lengths = [e - s for s, e in bounds]
    assert all(length <= chunk + min_len for length in lengths)
    assert len(bounds) == 1 or min(lengths) >= min_len


def test_chunk_bounds_rejects_overlap_not_below_chunk():
    with pytest.raises(ValueError):
        chunk_bounds(100, 10, 10)


@pytest.mark.parametrize("n", [SR, 3 * SR, 3 * SR + 1, 3 * SR + 300, 7 * SR + 12345])
def test_cross_fade_sums_to_one(n):
    # With an identity model, chunking must give back the input: the fades sum to one.
    wave = signal(n, channels=2)
    out = enhance_waveform(Identity(), wave, chunk_seconds=2.0, overlap_seconds=0.5)
    assert out.shape == wave.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, wave, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("chunk_s", "overlap_s"), [(1.0, 1.0), (0.5, 0.0), (2.0, 0.25)])
def test_chunked_has_exact_length_bounded_chunks_and_one_scale(chunk_s, overlap_s):
    stand_in = Identity()
    wave = signal(5 * SR + 77, channels=2)
    out = enhance_waveform(stand_in, wave, chunk_seconds=chunk_s, overlap_seconds=overlap_s)
    assert out.shape == wave.shape
    longest = max(length for length, _ in stand_in.calls)
    assert longest <= round(chunk_s * SR) + stand_in.min_samples  # memory stays bounded
    assert min(length for length, _ in stand_in.calls) >= stand_in.min_samples
    full_scale = level_scale(wave)
    for _, scale in stand_in.calls:  # every chunk used the full signal's level scale
        torch.testing.assert_close(scale, full_scale)


def test_chunked_matches_full_for_short_context_model(model):
    wave = signal(6 * SR, channels=1)
    full = enhance_waveform(model, wave)
    chunked = enhance_waveform(model, wave, chunk_seconds=1.5)
    assert snr_db(full, chunked) > 60


def test_channels_are_independent(model):
    wave = signal(3 * SR, channels=2)
    other = wave.clone()
    other[1] = 5.0 * signal(3 * SR, seed=7)[0]
    for chunk in (None, 1.0):
        a = enhance_waveform(model, wave, chunk_seconds=chunk)
        b = enhance_waveform(model, other, chunk_seconds=chunk)
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
        assert not torch.allclose(a[1], b[1])


def test_chunk_starts_fall_on_stft_frames():
    class HopAware(Identity):
        hop = 128

    stand_in = HopAware()
    n = 4 * SR + 1000
    ramp = torch.arange(n, dtype=torch.float64).float()[None] / n
    seen: list[int] = []
    stand_in.register_forward_pre_hook(lambda _, args: seen.append(round(float(args[0][0, 0]) * n)))
    enhance_waveform(stand_in, ramp, chunk_seconds=1.3, overlap_seconds=0.37)
    assert len(seen) > 3 and all(start % 128 == 0 for start in seen), seen


def test_real_model_chunked_matches_full_file(tiny):
    # c is shared and chunk starts sit on STFT frames, so only the recurrences' warm-up
    # differs; measured 38-53 dB over seeds and signals (2.8 dB with misaligned frames).
    assert frame_hop(tiny) == 128
    wave = signal(5 * SR + 333, channels=2)
    wave = wave * (0.5 + 0.5 * torch.sin(2 * torch.pi * 3 * torch.arange(wave.shape[1]) / SR))
    full = enhance_waveform(tiny, wave)
    chunked = enhance_waveform(tiny, wave, chunk_seconds=1.5, overlap_seconds=0.5)
    assert chunked.shape == wave.shape
    for ch in range(2):
        assert snr_db(full[ch], chunked[ch]) > 30


@pytest.mark.parametrize("chunk", [None, 0.5])
def test_real_model_channels_independent_and_exact_length(tiny, chunk):
    wave = signal(SR + 77, channels=2)
    other = wave.clone()
    other[1] = 3.0 * signal(SR + 77, seed=5)[0]
    a = enhance_waveform(tiny, wave, chunk_seconds=chunk, overlap_seconds=0.25)
    b = enhance_waveform(tiny, other, chunk_seconds=chunk, overlap_seconds=0.25)
    assert a.shape == wave.shape
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a[1], b[1])


def test_too_short_for_the_model(model):
    with pytest.raises(ValueError, match="at least 512"):
        enhance_waveform(model, signal(511))
    with pytest.raises(ValueError, match="shorter than the model's minimum"):
        enhance_waveform(model, signal(SR), chunk_seconds=0.01)


# --- enhance_file -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sr", "channels", "subtype", "name"),
    [
        (8000, 1, "PCM_16", "a.wav"),
        (16000, 2, "PCM_24", "b.wav"),
        (44100, 2, "FLOAT", "c.wav"),
        (48000, 1, "PCM_16", "d.flac"),
    ],
)
def test_enhance_file_keeps_length_rate_channels_subtype_format(
    tmp_path, model, sr, channels, subtype, name
):
    src = write_wav(tmp_path / "in" / name, sr, channels, seconds=0.73, subtype=subtype)
    dst = tmp_path / "out" / name
    warnings = enhance_file(model, src, dst, chunk_seconds=None, device="cpu")
    assert warnings == []
    x, info_in = read_audio(src)
    y, info_out = read_audio(dst)
    assert info_out == info_in and y.shape == x.shape
    assert not np.array_equal(x, y)  # the model really ran


def test_enhance_file_output_extension_picks_the_container(tmp_path, model):
    src = write_wav(tmp_path / "in.wav", subtype="PCM_24")
    enhance_file(model, src, tmp_path / "out.flac")
    info = sf.info(str(tmp_path / "out.flac"))
    assert (info.format, info.subtype) == ("FLAC", "PCM_24")


def test_enhance_file_rejects_too_short_input(tmp_path, model):
    # 700 samples at 44.1 kHz become 254 at 16 kHz: less than one 512-sample STFT frame.
    src = tmp_path / "click.wav"
    sf.write(str(src), signal(700).numpy().T, 44100)
    with pytest.raises(AudioError) as exc:
        enhance_file(model, src, tmp_path / "out.wav")
    text = str(exc.value)
    assert text.startswith(f"{src}: too short") and "15.9 ms" in text and "32 ms" in text
    assert not (tmp_path / "out.wav").exists()


def test_enhance_file_warns_on_digital_silence(tmp_path, model):
    src = tmp_path / "silence.wav"
    sf.write(str(src), np.zeros((8000, 2), np.float32), 16000, subtype="PCM_16")
    warnings = enhance_file(model, src, tmp_path / "out.wav")
    assert len(warnings) == 1 and "digital silence" in warnings[0]
    y, info = read_audio(tmp_path / "out.wav")
    assert y.shape == (2, 8000) and not y.any() and info.subtype == "PCM_16"


def test_enhance_file_itself_refuses_to_overwrite_its_input(tmp_path, model):
    src = write_wav(tmp_path / "in.wav")
    before = src.read_bytes()
    with pytest.raises(AudioError, match="refusing to overwrite the input"):
        enhance_file(model, src, tmp_path / "." / "in.wav")
    assert src.read_bytes() == before


def test_enhance_file_refuses_non_finite_model_output(tmp_path):
    src = write_wav(tmp_path / "in.wav")
    with pytest.raises(AudioError, match="NaN or Inf"):
        enhance_file(Exploding(), src, tmp_path / "out.wav")
    assert not (tmp_path / "out.wav").exists()


def test_enhance_file_real_recording_real_model(tmp_path, tiny, shared_data):
    src = shared_data / "vbd_test25/noisy/p232_003.wav"
    enhance_file(tiny, src, tmp_path / "out.wav", chunk_seconds=1.0, device="cpu")
    x, info_in = read_audio(src)
    y, info_out = read_audio(tmp_path / "out.wav")
    assert info_out == info_in and y.shape == x.shape


# --- collect_inputs / plan_outputs --------------------------------------------------------


def test_collect_inputs_recursive_case_insensitive_skips_hidden(tmp_path):
    root = tmp_path / "data"
    for rel in [
        "a.wav",
        "sub/B.WAV",
        "sub/deep/c.Flac",
        "notes.txt",
        ".hidden.wav",
        ".cache/x.wav",
        "sub/._d.wav",
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()
    single = tmp_path / "one.wav"
    single.touch()
    pairs = collect_inputs([root, single, root / "a.wav"])  # a.wav named twice: kept once
    assert [(p.relative_to(tmp_path).as_posix(), r.as_posix()) for p, r in pairs] == [
        ("data/a.wav", "a.wav"),
        ("data/sub/B.WAV", "sub/B.WAV"),
        ("data/sub/deep/c.Flac", "sub/deep/c.Flac"),
        ("one.wav", "one.wav"),
    ]


def test_plan_outputs_file_or_folder(tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.touch()
    b.touch()
    assert plan_outputs([a], tmp_path / "clean.wav") == [(a, tmp_path / "clean.wav")]
    existing = tmp_path / "existing"
    existing.mkdir()
    assert plan_outputs([a], existing) == [(a, existing / "a.wav")]
    assert plan_outputs([a], f"{tmp_path / 'new'}{os.sep}") == [(a, tmp_path / "new" / "a.wav")]
    out = tmp_path / "out"
    assert plan_outputs([a, b], out) == [(a, out / "a.wav"), (b, out / "b.wav")]
    folder = tmp_path / "folder"
    (folder / "x").mkdir(parents=True)
    (folder / "x" / "only.wav").touch()
    assert plan_outputs([folder], out) == [(folder / "x" / "only.wav", out / "x" / "only.wav")]


def test_plan_outputs_skips_earlier_results_nested_in_an_input_folder(tmp_path):
    rec = tmp_path / "rec"
    (rec / "clean").mkdir(parents=True)
    (rec / "a.wav").touch()
    (rec / "clean" / "a.wav").touch()  # from a previous run with -o rec/clean
    assert plan_outputs([rec], rec / "clean") == [(rec / "a.wav", rec / "clean" / "a.wav")]


# --- enhance_paths: a run survives bad files and never overwrites inputs ----------------


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def make_mixed_folder(root: Path) -> dict[str, Path]:
    """Good files interleaved with every kind of bad input (sorted order puts bad ones first)."""
    names = "0_text.wav 1_empty.wav 2_noframes.wav 3_truncated.wav 4_truncated.flac"
    names += " 5_nan.wav 6_short.wav 7_good.wav sub/8_good.flac"
    paths = {name: root / name for name in names.split()}
    (root / "sub").mkdir(parents=True)
    paths["0_text.wav"].write_text("not audio\n")
    paths["1_empty.wav"].touch()
    sf.write(str(paths["2_noframes.wav"]), np.zeros((0, 1), np.float32), SR)
    for name in ("3_truncated.wav", "4_truncated.flac"):
        write_wav(paths[name], seconds=1.0)
        data = paths[name].read_bytes()
        paths[name].write_bytes(data[: len(data) // 2])
    nan = signal(SR).numpy()
    nan[0, 10] = np.nan
    sf.write(str(paths["5_nan.wav"]), nan.T, SR, subtype="FLOAT")
    sf.write(str(paths["6_short.wav"]), signal(100).numpy().T, SR)
    write_wav(paths["7_good.wav"], 48000, 2, subtype="PCM_24")
    write_wav(paths["sub/8_good.flac"], 8000, 1)
    return paths


def test_enhance_paths_continues_after_each_kind_of_failure(tmp_path, model, capsys):
    paths = make_mixed_folder(tmp_path / "in")
    out = tmp_path / "out"
    report = enhance_paths(model, [tmp_path / "in"], out, chunk_seconds=None, device="cpu")
    assert [p.name for p, _ in report.done] == ["7_good.wav", "8_good.flac"]
    assert (out / "7_good.wav").exists() and (out / "sub" / "8_good.flac").exists()
    failed = dict(report.failed)
    expected = {
        "0_text.wav": "not a readable audio file",
        "1_empty.wav": "empty",
        "2_noframes.wav": "empty",
        "3_truncated.wav": "truncated",
        "4_truncated.flac": "truncated or corrupt",
        "5_nan.wav": "1 NaN",
        "6_short.wav": "too short",
    }
    for name, words in expected.items():
        assert words in failed[paths[name]] and str(paths[name]) in failed[paths[name]]
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == len(expected)  # one line per failed file, each naming the file
    assert all(any(str(paths[name]) in line for line in lines) for name in expected)
    assert report.summary() == "2 files enhanced, 7 failed"
    assert sorted(p.name for p in out.iterdir()) == ["7_good.wav", "sub"]  # no temp files


def test_output_equal_to_input_is_refused(tmp_path, model, capsys):
    src = write_wav(tmp_path / "take1.wav")
    before = src.read_bytes()
    report = enhance_paths(model, [src], src, progress=False)
    assert not report.done and "refusing to overwrite this input" in report.failed[0][1]
    # Folder mode with the input folder as output: every file would overwrite itself.
    other = write_wav(tmp_path / "take2.wav")
    report = enhance_paths(model, [tmp_path], tmp_path, progress=False)
    assert len(report.failed) == 2 and not report.done
    # A hard link to the input, and the input spelled through "..", are the same file too.
    os.link(src, tmp_path / "link.wav")
    report = enhance_paths(model, [src], tmp_path / "link.wav", progress=False)
    assert "refusing to overwrite" in report.failed[0][1]
    sub = tmp_path / "sub"
    sub.mkdir()
    report = enhance_paths(model, [src], sub / ".." / "take1.wav", progress=False)
    assert "refusing to overwrite" in report.failed[0][1]
    assert src.read_bytes() == before and other.exists()
    assert len(error_lines(capsys.readouterr().err)) == 5


def test_output_of_one_file_may_not_be_another_input(tmp_path, model):
    # in/a.wav -> out/a.wav would overwrite out/a.wav, which is itself an input.
    a = write_wav(tmp_path / "in" / "a.wav")
    also_input = write_wav(tmp_path / "out" / "a.wav", seconds=0.3)
    before = also_input.read_bytes()
    report = enhance_paths(model, [a, also_input], tmp_path / "out", progress=False)
    assert also_input.read_bytes() == before
    assert any("refusing to overwrite input" in msg for _, msg in report.failed)


def test_inputs_sharing_a_name_do_not_overwrite_each_other(tmp_path, model):
    a = write_wav(tmp_path / "x" / "take.wav")
    b = write_wav(tmp_path / "y" / "take.wav")
    report = enhance_paths(model, [a, b], tmp_path / "out", progress=False)
    assert report.done == [(a, tmp_path / "out" / "take.wav")]
    assert report.failed[0][0] == b and "already the output of" in report.failed[0][1]


def test_unwritable_outputs_are_per_file_errors(tmp_path, model, capsys):
    a = write_wav(tmp_path / "a.wav")
    b = write_wav(tmp_path / "b.wav")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    report = enhance_paths(model, [a, b], blocker / "out", progress=False)
    assert len(report.failed) == 2 and not report.done
    assert all("cannot create output folder" in msg for _, msg in report.failed)
    # An output name that is an existing folder cannot be replaced by a file.
    (tmp_path / "out" / "a.wav" / "x").mkdir(parents=True)
    report = enhance_paths(model, [a, b], tmp_path / "out", progress=False)
    assert [p for p, _ in report.done] == [b] and report.failed[0][0] == a
    assert "cannot write" in report.failed[0][1]
    assert len(error_lines(capsys.readouterr().err)) == 3


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root")
def test_read_only_output_folder_is_a_per_file_error(tmp_path, model):
    a = write_wav(tmp_path / "a.wav")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        report = enhance_paths(model, [a], locked, progress=False)
    finally:
        locked.chmod(0o755)
    assert "cannot write" in report.failed[0][1] and not list(locked.iterdir())


def test_permission_denied_on_write_is_a_per_file_error(tmp_path, model, monkeypatch):
    # Simulates a read-only output folder in a way that also works when tests run as root.
    real_open = os.open

    def deny_temp_files(path, *args, **kwargs):
        if ".tmp-" in os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("mbsnet.atomic.os.open", deny_temp_files)
    a, b = write_wav(tmp_path / "a.wav"), write_wav(tmp_path / "b.wav")
    report = enhance_paths(model, [a, b], tmp_path / "out", progress=False)
    assert len(report.failed) == 2 and not report.done
    assert all("cannot write (Permission denied)" in msg for _, msg in report.failed)


def test_checkpoint_to_folder_end_to_end(tmp_path, tiny):
    # What `mbsnet enhance` does: load a checkpoint, enhance a folder, report failures.
    save_checkpoint(tmp_path / "tiny.pt", tiny)
    loaded = model_from_checkpoint(tmp_path / "tiny.pt")
    write_wav(tmp_path / "in" / "a.wav", 44100, 2, seconds=0.4, subtype="PCM_24")
    write_wav(tmp_path / "in" / "b.flac", 8000, 1, seconds=0.4)
    (tmp_path / "in" / "c.wav").write_text("oops")
    report = enhance_paths(loaded, [tmp_path / "in"], tmp_path / "out", chunk_seconds=0.25)
    assert len(report.done) == 2 and len(report.failed) == 1
    for name in ("a.wav", "b.flac"):
        assert (
            sf.info(str(tmp_path / "out" / name)).frames
            == sf.info(str(tmp_path / "in" / name)).frames
        )


def test_missing_input_and_empty_folder(tmp_path, model, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    good = write_wav(tmp_path / "good.wav")
    report = enhance_paths(model, [tmp_path / "missing.wav", empty, good], tmp_path / "out")
    assert [p for p, _ in report.done] == [good]
    failed = dict(report.failed)
    assert "not found" in failed[tmp_path / "missing.wav"]
    assert "no .wav or .flac files" in failed[empty]
    assert len(error_lines(capsys.readouterr().err)) == 2


def test_warnings_are_reported_not_failed(tmp_path, model, capsys):
    src = tmp_path / "silence.wav"
    sf.write(str(src), np.zeros(SR, np.float32), SR)
    report = enhance_paths(model, [src], tmp_path / "out.wav", progress=False)
    assert report.done and not report.failed and len(report.warnings) == 1
    assert "warning: " in capsys.readouterr().err


def test_keyboard_interrupt_stops_the_run_and_leaves_no_temp(tmp_path):
    a = write_wav(tmp_path / "in" / "a.wav")
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        enhance_paths(Interrupting(), [a], out / "a.wav", progress=False)
    assert not out.exists() or not list(out.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_unavailable_cuda_is_refused_up_front(tmp_path, model):
    with pytest.raises(ValueError, match="CUDA"):
        enhance_paths(model, [tmp_path], tmp_path / "out", device="cuda")


def test_cli_reference_prints_pesq_and_stoi_before_and_after(tmp_path, tiny):
    import re

    from click.testing import CliRunner

    from mbsnet.cli import main
    from mbsnet.eval.pipeline import score_against

    examples = Path(__file__).parents[1] / "examples"
    noisy, clean = examples / "noisy_p232_005.wav", examples / "clean_p232_005.wav"
    save_checkpoint(tmp_path / "tiny.pt", tiny)
    out = tmp_path / "enhanced.wav"
    args = ["enhance", str(noisy), "-o", str(out), "--checkpoint", str(tmp_path / "tiny.pt"),
            "--quiet", "--reference", str(clean)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    line = result.stdout.strip().splitlines()[-1]
    score = r"([\d.]+) -> ([\d.]+) \(([+-][\d.]+)\)"
    pattern = rf"PESQ {score}  STOI {score}"
    match = re.fullmatch(pattern, line)
    assert match, line
    want = score_against(clean, noisy, ("pesq",))["pesq"]
    assert float(match.group(1)) == pytest.approx(want, abs=5e-4)  # the noisy input's PESQ
    after = score_against(clean, out, ("pesq", "stoi"))
    assert float(match.group(2)) == pytest.approx(after["pesq"], abs=5e-4)  # the written file
    folder = CliRunner().invoke(main, [*args[:1], str(examples), *args[2:]])
    assert folder.exit_code == 2 and "--reference goes with a single input file" in folder.output


class RefusesLongInputs(StandIn):
    """A model that fails like a kernel refusing an input (RuntimeError) on long files."""

    def forward(self, wave: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        if wave.shape[-1] > SR:
            raise RuntimeError("kernel refused: sequence too long for this build")
        return super().forward(wave, scale)


def test_a_model_error_fails_that_file_only(tmp_path, capsys):
    short = write_wav(tmp_path / "in" / "a_short.wav", seconds=0.5)
    long = write_wav(tmp_path / "in" / "b_long.wav", seconds=2.0)
    report = enhance_paths(RefusesLongInputs(), [tmp_path / "in"], tmp_path / "out")
    assert [p for p, _ in report.done] == [short]
    ((path, message),) = report.failed
    assert path == long and str(long) in message and "kernel refused" in message
    assert len(error_lines(capsys.readouterr().err)) == 1
