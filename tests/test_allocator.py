"""mbsnet.allocator: glibc accepts the thresholds; elsewhere nothing happens."""

import platform

import pytest

from mbsnet.allocator import keep_freed_memory
from mbsnet.train.config import RESUME_SAFE_KEYS, TrainConfig


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="needs glibc")
def test_glibc_takes_the_thresholds() -> None:
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # idempotent


def test_other_platforms_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.platform", "darwin")
    assert keep_freed_memory() is False


def test_switch_defaults_on_and_may_change_on_resume() -> None:
    assert TrainConfig.defaults().train.keep_freed_memory is True
    assert "train.keep_freed_memory" in RESUME_SAFE_KEYS
    cfg = TrainConfig.defaults().apply_overrides(["train.keep_freed_memory=false"])
    assert cfg.train.keep_freed_memory is False
