"""The bundled weights: model-only checkpoints trained by `mbsnet train` (MODEL_CARD.md).

`default.pt` (offline) and `default_causal.pt` (causal, for streaming) are ordinary mbsnet
checkpoints (loadable with ``weights_only=True``); commands that take a checkpoint use them when
none is given (`mbsnet enhance --stream` the causal one), and `mbsnet train --init default`
(or `default_causal`) fine-tunes them.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_NAME = "default"
"""What users type for the bundled model (`--init default`)."""
CAUSAL_NAME = "default_causal"
"""What users type for the bundled causal model (`--init default_causal`)."""


def default_checkpoint(causal: bool = False) -> Path:
    """Path of the bundled default checkpoint (causal: the streaming one).

    Raises:
        FileNotFoundError: this install has no such bundled weights (one-line message).
    """
    name = CAUSAL_NAME if causal else DEFAULT_NAME
    path = Path(__file__).with_name(f"{name}.pt")
    if not path.is_file():
        raise FileNotFoundError(
            f"no bundled {name} weights in this install ({path} is missing); "
            "give a checkpoint instead"
        )
    return path


def resolve_checkpoint(name: str | Path) -> Path:
    """`default` / `default_causal` -> a bundled checkpoint; anything else is a path."""
    if str(name) in (DEFAULT_NAME, CAUSAL_NAME):
        return default_checkpoint(causal=str(name) == CAUSAL_NAME)
    return Path(name)
