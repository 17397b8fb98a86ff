"""Test helper: small test sets copied from the real VoiceBank+DEMAND files in ../shared/data."""

from __future__ import annotations

import shutil
from pathlib import Path


def copy_pairs(shared: Path, dest: Path, names, enhanced: bool = False) -> Path:
    """A test dir (noisy/, clean/, optionally enhanced/) holding copies of vbd_test25 files."""
    folders = {"noisy": "noisy", "clean": "clean"}
    if enhanced:
        folders["enhanced"] = "enhanced_cmgan"
    for mine, theirs in folders.items():
        (dest / mine).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(shared / "vbd_test25" / theirs / f"{name}.wav", dest / mine)
    return dest
