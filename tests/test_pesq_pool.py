"""PesqPool: persistent workers, per-sample failures with reasons, crash -> clear error."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mbsnet.eval.metrics import pesq_wb
from mbsnet.scoring_pool import ScoringPoolError
from mbsnet.train.pesq_targets import PesqPool, denormalize_pesq, normalize_pesq

SEGMENT = 32_000  # 2 s, the training segment length


@pytest.fixture(scope="module")
def batch(shared_data: Path) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Four (clean, noisy) VoiceBank pairs as a zero-padded batch; item 2 is silent output."""
    folder = shared_data / "vbd_train6"
    names = sorted(p.name for p in (folder / "clean").glob("*.wav"))[:4]
    if len(names) < 4:
        pytest.skip(f"need 4 files in {folder}")
    clean = np.zeros((4, SEGMENT), np.float32)
    noisy = np.zeros((4, SEGMENT), np.float32)
    lengths = [30_000, 20_000, SEGMENT, 24_000]
    for i, (name, length) in enumerate(zip(names, lengths, strict=True)):
        clean[i, :length] = sf.read(folder / "clean" / name, dtype="float32")[0][:length]
        noisy[i, :length] = sf.read(folder / "noisy" / name, dtype="float32")[0][:length]
    noisy[2] = 0.0  # silent "enhanced" signal: PESQ is undefined
    return clean, noisy, lengths


def _expected(clean: np.ndarray, noisy: np.ndarray, lengths: list[int]) -> list[float | None]:
    out: list[float | None] = []
    for c, e, n in zip(clean, noisy, lengths, strict=True):
        out.append(None if not e.any() else normalize_pesq(pesq_wb(c[:n], e[:n].astype(float))))
    return out


def _check(result, expected) -> None:
    scores, valid, reasons = result
    assert scores.dtype == torch.float32 and valid.dtype == torch.bool
    for i, want in enumerate(expected):
        if want is None:
            assert not valid[i] and math.isnan(scores[i]) and "silent" in reasons[i]
            assert "\n" not in reasons[i]
        else:
            assert valid[i] and reasons[i] is None
            assert scores[i].item() == pytest.approx(want, abs=1e-5)


def test_in_process(batch):
    clean, noisy, lengths = batch
    expected = _expected(clean, noisy, lengths)
    with PesqPool(workers=0) as pool:
        handle = pool.submit(torch.from_numpy(clean), noisy, lengths)  # tensors or arrays
        _check(pool.result(handle), expected)
        assert pool.last_wait_s > 0 and pool.num_results == 1
        with pytest.raises(ValueError, match="pending"):
            pool.result(handle)  # a handle is collected once
        with pytest.raises(ValueError, match="length"):
            pool.submit(clean, noisy, [SEGMENT + 1, 1, 1, 1])
    assert denormalize_pesq(normalize_pesq(3.2)) == pytest.approx(3.2)


def test_workers_persist_overlap_and_recover_from_a_crash(batch):
    clean, noisy, lengths = batch
    expected = _expected(clean, noisy, lengths)
    parent_blas = os.environ.get("OPENBLAS_NUM_THREADS")
    with PesqPool(workers=2, timeout_s=60) as pool:
        pids = set(pool.pool._executor._processes)
        assert len(pids) == 2
        # Workers run one BLAS thread; the parent's environment is left as it was.
        assert pool.pool._executor.submit(os.getenv, "OPENBLAS_NUM_THREADS").result() == "1"
        assert os.environ.get("OPENBLAS_NUM_THREADS") == parent_blas
        first = pool.submit(clean, noisy, lengths)  # two batches in flight at once
        second = pool.submit(clean[:2], clean[:2], lengths[:2])
        _check(pool.result(first), expected)
        scores, valid, _ = pool.result(second)
        assert valid.all() and torch.all(scores > 1.0)  # identical signals: PESQ 4.64
        assert set(pool.pool._executor._processes) == pids  # the same processes, reused
        assert pool.total_wait_s >= pool.last_wait_s >= 0 and pool.num_results == 2

        # A worker killed mid-batch: a clear error, not a hang; then fresh workers.
        long_clean, long_noisy = np.tile(clean[:1], (8, 4)), np.tile(clean[:1], (8, 4))
        handle = pool.submit(long_clean, long_noisy)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(ScoringPoolError, match="died"):
            pool.result(handle)
        assert time.monotonic() - start < 30
        _check(pool.score(clean, noisy, lengths), expected)
        assert pool.restarts == 1 and not pids & set(pool.pool._executor._processes)
    with pytest.raises(ScoringPoolError, match="closed"):
        pool.submit(clean, noisy, lengths)
    pool.close()  # idempotent


_GROUP_SIGNAL_SCRIPT = """
import os, signal, sys, time
import soundfile as sf
from mbsnet.train.pesq_targets import PesqPool

def main():
    caught = []
    signal.signal(signal.SIGTERM, lambda *_: caught.append("TERM"))  # as the trainer's StopFlag
    signal.signal(signal.SIGINT, lambda *_: caught.append("INT"))
    audio, _ = sf.read(sys.argv[1], dtype="float32")
    with PesqPool(2) as pool:
        os.killpg(0, signal.SIGTERM)  # what Slurm and Ctrl-C do: every process of the group
        os.killpg(0, signal.SIGINT)
        time.sleep(0.5)
        scores = pool.score(audio[None], audio[None])
    print(caught, bool(scores.valid.all()))


if __name__ == "__main__":  # spawned workers re-import this script
    main()
"""


def test_workers_survive_a_signal_to_the_whole_process_group(tmp_path):
    """The parent handles SIGTERM/SIGINT (and saves); its PESQ workers must not die of them."""
    example = Path(__file__).parents[1] / "examples" / "noisy_p232_005.wav"
    script = tmp_path / "group_signal.py"
    script.write_text(_GROUP_SIGNAL_SCRIPT)
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(script), str(example)], capture_output=True, text=True,
        timeout=120, start_new_session=True,  # its own process group: the signal stays there
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['TERM', 'INT'] True"
