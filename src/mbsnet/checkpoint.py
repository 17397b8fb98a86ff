"""Checkpoints as plain dicts of primitives and tensors, loadable with ``weights_only=True``.

No pickled classes: a checkpoint never runs code when loaded, and it stays readable when the
model classes are refactored, as long as `arch` and `config` still mean the same thing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import mbsnet
from mbsnet.atomic import atomic_path

FORMAT = "mbsnet-checkpoint"
FORMAT_VERSION = 1

_REQUIRED_KEYS = ("arch", "config", "state_dict")
_MAX_KEYS_SHOWN = 5
_DICT_LABEL = "<checkpoint dict>"


class CheckpointError(Exception):
    """A problem with one checkpoint; `str()` is the single line ``"{path}: {problem}"``."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _show_keys(keys: Any) -> str:
    keys = [str(k) for k in keys]
    shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
    more = len(keys) - _MAX_KEYS_SHOWN
    return shown + (f", ... ({more} more)" if more > 0 else "") if keys else "none"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (how exports and fine-tuning runs name their source)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, extra: dict[str, Any] | None = None
) -> None:
    """Write `model` as a plain-dict checkpoint, atomically.

    Args:
        path: destination file (conventionally ``*.pt``); replaced only after a full write.
        model: a registered model with `ARCH` and a dataclass `config`.
        extra: optional plain data (primitives, tensors, lists/dicts of them), e.g. the
            training step or metrics; stored under ``"extra"``.

    Raises:
        OSError: the file cannot be written.
    """
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": model.ARCH,
        "config": dataclasses.asdict(model.config),
        "state_dict": model.state_dict(),
        "mbsnet_version": mbsnet.__version__,
    }
    if extra:
        ckpt["extra"] = extra
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load and validate an mbsnet checkpoint (always with ``weights_only=True``).

    Args:
        path: a file written by `save_checkpoint`.
        map_location: passed to `torch.load` (device for the tensors).

    Returns:
        The checkpoint dict (format, format_version, arch, config, state_dict, ...).

    Raises:
        CheckpointError: missing, unreadable/corrupt, not an mbsnet checkpoint, malformed,
            or written by a newer format version.
        ValueError: `map_location` names a CUDA device and CUDA is not available.
    """
    path = Path(path)
    _check_device(map_location)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.is_dir():
        raise CheckpointError(path, "is a directory, not a checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as err:  # torch raises many types here: zip, pickle, runtime errors
        raise CheckpointError(path, f"not a readable checkpoint ({_first_line(err)})") from err
    validate_checkpoint(ckpt, path)
    return ckpt


def _check_device(map_location: Any) -> None:
    # Otherwise torch reports a missing GPU as a deserialization failure of the file.
    if isinstance(map_location, str | torch.device):
        device = torch.device(map_location)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("CUDA was requested but is not available; use --device cpu")


def validate_checkpoint(ckpt: Any, path: str | os.PathLike[str] = _DICT_LABEL) -> None:
    """Raise `CheckpointError` unless `ckpt` is a well-formed checkpoint this version reads."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(path, f"not an mbsnet checkpoint (holds a {type(ckpt).__name__})")
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(path, f"not an mbsnet checkpoint (keys: {_show_keys(ckpt)})")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(path, f"malformed checkpoint (format_version {version!r})")
    if version > FORMAT_VERSION:
        writer = ckpt.get("mbsnet_version", "unknown")
        raise CheckpointError(
            path,
            f"written by a newer mbsnet ({writer}, checkpoint format {version}); this mbsnet "
            f"{mbsnet.__version__} reads format {FORMAT_VERSION} at most: upgrade mbsnet",
        )
    missing = [key for key in _REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise CheckpointError(path, f"malformed checkpoint (missing {', '.join(missing)})")
    if not isinstance(ckpt["arch"], str):
        raise CheckpointError(path, f"malformed checkpoint (arch {ckpt['arch']!r})")
    for key in ("config", "state_dict"):
        if not isinstance(ckpt[key], Mapping):
            raise CheckpointError(path, f"malformed checkpoint ({key} is not a dict)")


def _shape_of(value: Any) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def _state_dict_mismatch(model: nn.Module, state: Mapping[str, Any]) -> str | None:
    """Describe how `state` differs from the model's own keys and shapes, or None."""
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing:
        problems.append(f"missing keys: {_show_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_show_keys(unexpected)}")
    shapes = [
        f"{k} {_shape_of(state[k])} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and _shape_of(state[k]) != tuple(v.shape)
    ]
    if shapes:
        problems.append(f"shape mismatch (checkpoint vs model): {_show_keys(shapes)}")
    return "; ".join(problems) or None


def model_from_checkpoint(
    path_or_dict: str | os.PathLike[str] | Mapping[str, Any], map_location: Any = "cpu"
) -> nn.Module:
    """Build the model a checkpoint describes and load its weights strictly.

    Args:
        path_or_dict: a checkpoint file, or a dict already returned by `load_checkpoint`.
        map_location: where tensors are loaded; a device string or `torch.device` also
            places the model there.

    Returns:
        The model in eval mode.

    Raises:
        CheckpointError: as for `load_checkpoint`, plus unknown arch, bad config, or weights
            that do not match the architecture (names the first few offending keys).
    """
    from mbsnet.models import create_model  # deferred: the model zoo is heavy to import

    if isinstance(path_or_dict, Mapping):
        label: str | Path = _DICT_LABEL
        ckpt = path_or_dict
        validate_checkpoint(ckpt, label)
    else:
        label = Path(path_or_dict)
        ckpt = load_checkpoint(label, map_location=map_location)
    try:
        model = create_model(ckpt["arch"], dict(ckpt["config"]))
    except (ValueError, TypeError) as err:
        raise CheckpointError(label, f"cannot build the model ({_first_line(err)})") from err
    mismatch = _state_dict_mismatch(model, ckpt["state_dict"])
    if mismatch:
        raise CheckpointError(label, f"weights do not fit arch {ckpt['arch']!r}: {mismatch}")
    model.load_state_dict(ckpt["state_dict"], strict=True)
    if isinstance(map_location, str | torch.device):
        model.to(map_location)
    return model.eval()
