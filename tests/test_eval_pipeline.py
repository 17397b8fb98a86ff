"""evaluate(): sources, published noisy row, denormalization, OOM fallback, failures, pool."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn
from vbd_files import copy_pairs

from mbsnet.audio import resample
from mbsnet.eval import METRICS, compute_metrics
from mbsnet.eval import pipeline as pipeline_module
from mbsnet.eval.pairs import find_test_dir_pairs
from mbsnet.eval.pipeline import ModelSource, evaluate, is_out_of_memory, make_source
from mbsnet.eval.report import EvalReport, Row, summarize
from mbsnet.models import create_model, preset_config
from mbsnet.models.level import level_scale

TOLERANCE = {"pesq": 1e-3, "csig": 0.02, "cbak": 0.02, "covl": 0.02, "ssnr": 0.05, "stoi": 0.005}
COLUMN = {"pesq": "py_PESQ_wb", "csig": "py_CSIG", "cbak": "py_CBAK", "covl": "py_COVL"}
COLUMN |= {"ssnr": "py_SSNR", "stoi": "py_STOI"}
SHORT = ("p232_052", "p232_170", "p257_054", "p257_143")  # 2.1-2.5 s: fast to score




def published(shared: Path) -> dict[str, dict[str, float]]:
    table = shared / "reference" / "vbd_published_noisy_metrics_for_our_files.csv"
    return {
        f"{r['utt']}.wav": {m: float(r[c]) for m, c in COLUMN.items()}
        for r in csv.DictReader(table.open())
    }


def assert_published(rows: list[Row], reference: dict[str, dict[str, float]]) -> None:
    for row in rows:
        assert row.status == "ok" and row.errors == {}, row
        for name, tol in TOLERANCE.items():
            want = reference[row.file][name]
            assert row.values[name] == pytest.approx(want, abs=tol), (row.file, name)


@pytest.fixture(scope="module")
def short_dir(shared_data, tmp_path_factory) -> Path:
    return copy_pairs(shared_data, tmp_path_factory.mktemp("short"), SHORT)


@pytest.fixture(scope="module")
def noisy_report(short_dir) -> EvalReport:
    return evaluate(find_test_dir_pairs(short_dir).pairs, None, workers=0)


@pytest.fixture(scope="module")
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("mbsnet", preset_config("tiny")).eval()


def test_noisy_row_reproduces_published_values(noisy_report, shared_data):
    assert [row.file for row in noisy_report.rows] == [f"{n}.wav" for n in SHORT]
    assert noisy_report.source.startswith("noisy")
    assert_published(noisy_report.rows, published(shared_data))


def test_worker_pool_gives_the_same_numbers(short_dir, noisy_report):
    pooled = evaluate(find_test_dir_pairs(short_dir).pairs, None, workers=2)
    for got, ref in zip(pooled.rows, noisy_report.rows, strict=True):
        assert (got.file, got.status, got.errors) == (ref.file, ref.status, ref.errors)
        # Single-threaded BLAS in the workers changes the composite's last bits (~1e-11).
        assert got.values == pytest.approx(ref.values, rel=1e-9, abs=1e-9)


def test_enhanced_folder_cmgan_beats_noisy(shared_data, tmp_path):
    names = ("p257_022", "p232_006", "p257_019")
    test_dir = copy_pairs(shared_data, tmp_path, names, enhanced=True)
    pairs = find_test_dir_pairs(test_dir).pairs
    noisy = summarize(evaluate(pairs, None, workers=0))["mean"]
    cmgan = summarize(evaluate(pairs, test_dir / "enhanced", workers=0))["mean"]
    assert cmgan["pesq"] > 3.0 and cmgan["pesq"] > noisy["pesq"] + 1.0
    assert cmgan["ssnr"] > noisy["ssnr"] + 5.0


class ScaledIdentity(nn.Module):
    """Normalize by c and divide by c again, like the models do; `denormalize=False` forgets."""

    min_samples = 1

    def __init__(self, denormalize: bool = True) -> None:
        super().__init__()
        self.denormalize = denormalize

    def forward(self, wave: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        scale = level_scale(wave) if scale is None else scale
        out = wave * scale  # what the network sees (unit RMS); an identity network returns it
        return out / scale if self.denormalize else out


class IdentityMaskMBSNet(type(create_model("mbsnet", preset_config("tiny")))):
    """A real MBS-Net whose mask passes the spectrum through: the models' own
    normalize -> STFT -> iSTFT -> denormalize path around an identity."""

    def estimate_mask(self, spec: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(spec.shape[0], 3, *spec.shape[1:])
        mask[:, 1, 0] = 1.0  # centre tap, real part
        return mask


def test_identity_model_scores_equal_the_noisy_row(short_dir, noisy_report):
    pairs = find_test_dir_pairs(short_dir).pairs[:2]
    want = noisy_report.rows[:2]
    exact = evaluate(pairs, ScaledIdentity(), workers=0).rows
    for got, ref in zip(exact, want, strict=True):
        assert got.values == pytest.approx(ref.values, abs=1e-6)
    real_path = evaluate(pairs, IdentityMaskMBSNet(preset_config("tiny")), workers=0).rows
    for got, ref in zip(real_path, want, strict=True):
        assert got.values == pytest.approx(ref.values, abs=1e-4)
    # A model that forgets to denormalize returns audio at unit RMS, which a written file
    # clips (eval scores what enhance writes); SSNR shows it, as the comparison above would.
    forgot = evaluate(pairs, ScaledIdentity(denormalize=False), workers=0).rows
    for got, ref in zip(forgot, want, strict=True):
        assert abs(got.values["ssnr"] - ref.values["ssnr"]) > 1.0


def _fail_full_file_once(monkeypatch, error: Exception) -> list[float | None]:
    calls: list[float | None] = []
    real = pipeline_module.enhance_array

    def flaky(model, wave, chunk_seconds=None, **kwargs):
        calls.append(chunk_seconds)
        if chunk_seconds is None and len(calls) == 1:
            raise error
        return real(model, wave, chunk_seconds=chunk_seconds, **kwargs)

    monkeypatch.setattr(pipeline_module, "enhance_array", flaky)
    return calls


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                     "memory: you tried to allocate 85899345920 bytes. Error code 12"),
    ],
)
def test_out_of_memory_retries_in_chunks(monkeypatch, short_dir, tiny_model, error):
    pairs = find_test_dir_pairs(short_dir).pairs[:2]
    calls = _fail_full_file_once(monkeypatch, error)
    rows = evaluate(pairs, tiny_model, workers=0).rows
    half = sf.info(pairs[0].noisy).frames / 16000 / 2  # retried in chunks of half the file
    assert calls[:2] == [None, pytest.approx(half)]
    assert calls[2:] == [None]  # the next file goes back to full-file inference
    assert [row.chunked for row in rows] == [True, False]
    assert all(row.status == "ok" and set(row.values) == set(METRICS) for row in rows)


def test_other_model_errors_fail_the_row_only(monkeypatch, short_dir, tiny_model):
    pairs = find_test_dir_pairs(short_dir).pairs[:2]
    calls = _fail_full_file_once(monkeypatch, RuntimeError("shape mismatch in layer 3"))
    rows = evaluate(pairs, tiny_model, workers=0, log=None).rows
    assert calls == [None, None]  # no chunked retry for a non-memory error
    assert rows[0].status == "failed" and rows[0].error == "RuntimeError: shape mismatch in layer 3"
    assert rows[0].values == {} and rows[1].status == "ok"


def test_out_of_memory_in_chunks_too_fails_the_row(monkeypatch, short_dir, tiny_model):
    def always_oom(*args, **kwargs):
        raise torch.OutOfMemoryError("out of memory")

    monkeypatch.setattr(pipeline_module, "enhance_array", always_oom)
    rows = evaluate(find_test_dir_pairs(short_dir).pairs[:1], tiny_model, workers=0).rows
    assert rows[0].status == "failed" and "out of memory, even in chunks of 1.1 s" in rows[0].error


def _snr(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - estimate) ** 2)))


def test_chunked_agrees_with_full_file_and_max_seconds_forces_it(
    shared_data, tmp_path, tiny_model
):
    test_dir = copy_pairs(shared_data, tmp_path, ("p232_023", "p232_052"))  # 9.8 s and 2.2 s
    pairs = find_test_dir_pairs(test_dir).pairs
    noisy, _ = sf.read(pairs[0].noisy, dtype="float32")
    full = ModelSource(tiny_model).enhance(pairs[0], noisy[None])
    chunked = ModelSource(tiny_model, max_seconds=3.0).enhance(pairs[0], noisy[None])
    assert not full.chunked and chunked.chunked
    snr = _snr(full.audio, chunked.audio)
    print(f"chunked (3 s chunks, 1 s overlap) vs full-file output of the tiny model: {snr:.1f} dB")
    assert snr > 30.0

    rows = evaluate(pairs, tiny_model, workers=0, max_seconds=3.0).rows
    whole = evaluate(pairs, tiny_model, workers=0).rows
    assert [(row.file, row.chunked) for row in rows] == [("p232_023.wav", True),
                                                        ("p232_052.wav", False)]
    assert not any(row.chunked for row in whole)
    assert rows[0].values == pytest.approx(whole[0].values, abs=0.02)
    assert rows[1].values == whole[1].values


def _speech(shared: Path) -> np.ndarray:
    clean, _ = sf.read(shared / "vbd_test25" / "clean" / "p232_052.wav", dtype="float32")
    return clean


def test_bad_files_fail_their_rows_and_the_run_completes(shared_data, tmp_path):
    clean = _speech(shared_data)
    noise = 0.01 * np.random.default_rng(0).standard_normal(clean.size).astype(np.float32)
    for side in ("noisy", "clean"):
        (tmp_path / side).mkdir()
    cases = ["damaged", "good", "mismatch", "silent", "speck", "stereo", "wrong_rate"]
    for name in cases:
        sf.write(tmp_path / "clean" / f"{name}.wav", clean, 16000)
        sf.write(tmp_path / "noisy" / f"{name}.wav", clean + noise, 16000)
    data = (tmp_path / "noisy" / "damaged.wav").read_bytes()
    (tmp_path / "noisy" / "damaged.wav").write_bytes(data[: len(data) // 2])  # truncated
    sf.write(tmp_path / "noisy" / "mismatch.wav", (clean + noise)[:-100], 16000)
    sf.write(tmp_path / "clean" / "silent.wav", np.zeros_like(clean), 16000)
    sf.write(tmp_path / "noisy" / "stereo.wav", np.stack([clean, clean], 1), 16000)
    speck = np.zeros_like(clean)  # 0.19 s of speech in digital silence: too short for STOI
    speck[8000:11000] = clean[20000:23000]
    sf.write(tmp_path / "clean" / "speck.wav", speck, 16000)
    sf.write(tmp_path / "noisy" / "speck.wav", speck + noise, 16000)
    for side in ("noisy", "clean"):
        sf.write(tmp_path / side / "wrong_rate.wav", resample(clean[None], 16000, 8000)[0], 8000)
    messages: list[str] = []
    report = evaluate(find_test_dir_pairs(tmp_path).pairs, None, workers=0, log=messages.append)
    rows = {row.file.removesuffix(".wav"): row for row in report.rows}
    assert list(rows) == cases
    assert "truncated" in rows["damaged"].error and "damaged.wav" in rows["damaged"].error
    assert rows["good"].status == "ok"
    assert rows["mismatch"].error == "length mismatch: noisy has 35084 frames, clean 35184"
    assert rows["silent"].status == "failed" and not rows["silent"].error
    assert rows["silent"].errors["pesq"] == "silent reference (all-zero clean signal)"
    assert "2 channels" in rows["stereo"].error
    assert rows["speck"].status == "partial" and "pesq" in rows["speck"].values
    assert list(rows["speck"].errors) == ["stoi"]
    assert rows["speck"].reason() == (
        "stoi: too short for STOI after removing silent frames (< 30 frames)"
    )
    assert "8000 Hz" in rows["wrong_rate"].error and "--resample" in rows["wrong_rate"].error
    assert len(messages) == 5 and all(m.startswith("error: ") for m in messages)  # not silent

    summary = summarize(report)
    assert summary["count"] == 7
    assert summary["failed"] == {"pesq": 5, "csig": 5, "cbak": 5, "covl": 5, "ssnr": 5, "stoi": 6}
    valid = [rows["good"].values["pesq"], rows["speck"].values["pesq"]]
    assert summary["mean"]["pesq"] == pytest.approx(np.mean(valid))
    assert summary["std"]["pesq"] == pytest.approx(np.std(valid))
    assert summary["mean"]["stoi"] == rows["good"].values["stoi"]
    assert summary["std"]["stoi"] == 0.0
    assert summary["files_partial"] == ["speck.wav"]


def test_resample_flag(shared_data, tmp_path):
    for name in SHORT[:2]:
        for side in ("noisy", "clean"):
            x, _ = sf.read(shared_data / "vbd_test25" / side / f"{name}.wav", dtype="float32")
            (tmp_path / side).mkdir(exist_ok=True)
            sf.write(tmp_path / side / f"{name}.wav", resample(x[None], 16000, 8000)[0], 8000)
    pairs = find_test_dir_pairs(tmp_path).pairs
    strict = evaluate(pairs, None, workers=0, log=None)
    assert all("8000 Hz" in row.error for row in strict.rows) and strict.resampled == []
    messages: list[str] = []
    loose = evaluate(pairs, None, workers=0, resample=True, log=messages.append)
    assert all(row.status == "ok" for row in loose.rows)
    assert loose.resampled == [f"{n}.wav" for n in SHORT[:2]]
    assert len(messages) == 1 and "NOT comparable to published tables" in messages[0]
    assert loose.warnings == [messages[0].removeprefix("warning: ")]


def test_enhanced_folder_problems(short_dir, tmp_path):
    pairs = find_test_dir_pairs(short_dir).pairs[:3]
    x, _ = sf.read(pairs[1].noisy, dtype="float32")
    sf.write(tmp_path / pairs[1].name, x[:-10], 16000)
    y, _ = sf.read(pairs[2].noisy, dtype="float32")
    sf.write(tmp_path / pairs[2].name, np.stack([y, y], 1), 16000)
    rows = evaluate(pairs, tmp_path, workers=0, log=None).rows
    assert rows[0].error == f"no enhanced file {pairs[0].name} in {tmp_path}"
    assert rows[1].error == f"enhanced has {x.size - 10} samples at 16 kHz, noisy {x.size}"
    assert rows[2].error.startswith("enhanced has 2 channels")


def test_make_source_rejects_model_options_for_other_sources(tmp_path):
    with pytest.raises(ValueError, match="model source only"):
        make_source(tmp_path, max_seconds=5.0)
    with pytest.raises(ValueError, match="model source only"):
        make_source(None, device="cpu")


CRASH_SIZE = 35184  # samples of p232_052: the worker dies on this file, every time


def crash_on_one_file(clean, enhanced, sample_rate, extended):
    """Stand-in for compute_metrics in worker processes (imported there by name)."""
    if clean.size == CRASH_SIZE:
        os._exit(1)  # like a worker killed for memory: BrokenProcessPool in the parent
    return compute_metrics(clean, enhanced, sample_rate, extended)


def test_dead_worker_fails_only_its_file(monkeypatch, short_dir, noisy_report):
    monkeypatch.setattr(pipeline_module, "compute_metrics", crash_on_one_file)
    pairs = find_test_dir_pairs(short_dir).pairs[:3]
    rows = evaluate(pairs, None, workers=2, log=None).rows
    assert rows[0].file == "p232_052.wav"
    assert rows[0].error == "a metrics worker process died on this file (twice)"
    for got, ref in zip(rows[1:], noisy_report.rows[1:3], strict=True):
        assert got.values == pytest.approx(ref.values, rel=1e-9, abs=1e-9)


def test_out_of_memory_classification():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: 8 GB"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("size mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only RuntimeErrors by message


def test_model_output_is_scored_as_enhance_writes_it(tmp_path):
    """eval scores the clipped, int16-quantized file a user would get from enhance."""
    from mbsnet.audio import read_audio, write_audio
    from mbsnet.eval.pairs import Pair
    from mbsnet.eval.pipeline import ModelSource, prepare_pair

    rng = np.random.default_rng(0)
    clean = (0.3 * rng.standard_normal(16000)).astype(np.float32)
    for side in ("noisy", "clean"):
        write_audio(tmp_path / f"{side}.wav", clean[None], 16000, subtype="PCM_16")

    class Loud:  # a backend whose output leaves [-1, 1] and falls between int16 steps
        description, min_samples, hop = "loud", 512, 128

        def __call__(self, wave, reference):
            return 3.3 * wave + 1e-6

        def release_memory(self):
            pass

    prepared = prepare_pair(Pair("x", tmp_path / "noisy.wav", tmp_path / "clean.wav"),
                            ModelSource(Loud()), allow_resample=False)  # fmt: skip
    noisy, _ = read_audio(tmp_path / "noisy.wav")
    write_audio(tmp_path / "enhanced.wav", 3.3 * noisy + 1e-6, 16000, subtype="PCM_16")
    written, _ = read_audio(tmp_path / "enhanced.wav")
    assert np.array_equal(prepared.enhanced, written[0])
    assert np.abs(prepared.enhanced).max() <= 1.0
