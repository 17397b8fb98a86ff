"""The bundled default weights: a model-only checkpoint trained by `mbsnet train` (MODEL_CARD.md).

`default.pt` is an ordinary mbsnet checkpoint (loadable with ``weights_only=True``); commands
that take a checkpoint use it when none is given, and `mbsnet train --init default` fine-tunes it.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_NAME = "default"
"""What users type for the bundled model (`--init default`)."""


def default_checkpoint() -> Path:
    """Path of the bundled default checkpoint.

    Raises:
        FileNotFoundError: this install has no bundled weights (one-line message).
    """
    path = Path(__file__).with_name("default.pt")
    if not path.is_file():
        raise FileNotFoundError(
            f"no bundled default weights in this install ({path} is missing); "
            "give a checkpoint instead"
        )
    return path


def resolve_checkpoint(name: str | Path) -> Path:
    """`default` -> the bundled checkpoint; anything else is a path, returned as is."""
    return default_checkpoint() if str(name) == DEFAULT_NAME else Path(name)
