"""What every export module shares, importable without torch (the CLI reads it at start-up)."""

DEFAULT_OPSET = 17
"""LayerNormalization is a single op from opset 17 on (lower opsets spell it out in 10 ops)."""

MIN_SNR_DB = 60.0
"""A float32 graph below this SNR against PyTorch (at any checked shape) is refused."""


class ExportError(Exception):
    """Export or its parity check failed; `str()` is one line naming the file and problem."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
