"""One-line messages: every error mbsnet prints about a file or a metric goes through these."""

from __future__ import annotations


def one_line(text: object) -> str:
    """`text` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def exception_line(exc: BaseException) -> str:
    """``Type: args`` of an exception on one line (bytes arguments decoded, as pesq raises)."""
    args = [a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in exc.args]
    return one_line(f"{type(exc).__name__}: {' '.join(args)}".rstrip(": "))
