"""Training: data (paired folders or on-the-fly mixing), seeded for exact resume.

Names are imported lazily (PEP 562): importing one submodule (or this package for one name)
does not load the others, torch and the data stack included.
To add a public name, add it to `_EXPORTS` with the module that defines it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AudioFile": "mbsnet.train.files",
    "DataError": "mbsnet.train.files",
    "FileScan": "mbsnet.train.files",
    "MixParams": "mbsnet.train.mixing",
    "MixingTrainSet": "mbsnet.train.mixing",
    "MixingValidationSet": "mbsnet.train.mixing",
    "PairScan": "mbsnet.train.data",
    "PairedTrainSet": "mbsnet.train.data",
    "Problem": "mbsnet.train.files",
    "TrainPair": "mbsnet.train.data",
    "ValidationSet": "mbsnet.train.data",
    "active_power": "mbsnet.train.mixing",
    "collate_fixed": "mbsnet.train.data",
    "collect_audio_files": "mbsnet.train.files",
    "find_paired_splits": "mbsnet.train.data",
    "scan_audio_files": "mbsnet.train.files",
    "scan_pairs": "mbsnet.train.data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
