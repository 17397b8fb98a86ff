"""Atomic file writes: a crash or error mid-write never leaves a half-written or clobbered file."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

# Bound on name-collision retries; each attempt uses 64 random bits, so this is never reached.
_MAX_ATTEMPTS = 100


def _create_temp(path: Path) -> Path:
    """Exclusively create an empty hidden temp file beside `path` (same suffix) and return it."""
    for _ in range(_MAX_ATTEMPTS):
        tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}{path.suffix}")
        try:
            # O_EXCL: never reuse someone else's file; mode 0o666 lets the umask decide, as
            # for a plain open() (mkstemp would force 0o600 on the final file).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {path}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not supported everywhere (e.g. Windows), hence best effort.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write to; it replaces `path` only if the block succeeds.

    The temp file lives in the same directory (so the final `os.replace` is atomic) under a
    hidden name ``.NAME.tmp-<random><suffix>``; keeping the suffix lets writers that infer
    the format from the extension (soundfile, torch) work unchanged. On any exception,
    KeyboardInterrupt included, the temp file is removed and `path` is left untouched. When
    `path` already exists, its permission bits carry over to the new file.

    Args:
        path: final destination; its parent directory must exist.

    Returns:
        A context manager yielding the temp `Path` (already created, empty).

    Raises:
        OSError: the temp file cannot be created (e.g. no write permission) or the final
            replace fails (e.g. `path` is a directory).
    """
    path = Path(path)
    tmp = _create_temp(path)
    try:
        yield tmp
        _fsync_file(tmp)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
