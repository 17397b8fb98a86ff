"""The one error type of `mbsnet export`."""


class ExportError(Exception):
    """Export or its parity check failed; `str()` is one line naming the file and problem."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
