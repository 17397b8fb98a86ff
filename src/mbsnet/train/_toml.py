"""Typed TOML values for `mbsnet.train.config`: type checks, literal parsing, writing."""

from __future__ import annotations

import json
import tomllib
import typing
from typing import Any


class ConfigError(ValueError):
    """An invalid configuration; the message names the offending key."""


def check_type(value: Any, tp: Any, key: str) -> Any:
    """`value` if it has type `tp` (an int is accepted, and converted, for a float)."""
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is an int subclass: reject true/false for an int and 1/0 for a bool.
    if type(value) is not tp:
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def parse_literal(raw: str, tp: Any, key: str) -> Any:
    """The TOML literal `raw` (a bare word is accepted as is where `tp` is str)."""
    raw = raw.strip()
    try:
        doc = tomllib.loads(f"v = {raw}")
    except tomllib.TOMLDecodeError:
        doc = None
    if doc is not None and len(doc) == 1:
        return doc["v"]
    if tp is str and "\n" not in raw:
        return raw
    raise ConfigError(f"{key}: {raw!r} is not a TOML value")


def _toml_str(text: str) -> str:
    """A TOML basic string (JSON escapes minus the ones TOML lacks)."""
    escaped = json.dumps(text, ensure_ascii=False)
    return escaped.replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    """A bool, int, float, str or list of them written as a TOML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # repr(float) always has '.', 'e', 'inf' or 'nan': stays a float
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
