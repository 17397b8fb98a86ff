"""Training logs: the terminal and RUN_DIR/train.log on rank 0, warnings only on the others."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mbsnet import distrib

LOGGER_NAME = "mbsnet.train"


def setup_logging(run_dir: Path | None) -> logging.Logger:
    """Terminal and RUN_DIR/train.log on rank 0 (same lines); warnings only on other ranks."""
    logger = logging.getLogger(LOGGER_NAME)
    close_logging(logger)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(logging.INFO if distrib.is_main() else logging.WARNING)
    handlers: list[logging.Handler] = [terminal]
    if run_dir is not None and distrib.is_main():
        handlers.append(logging.FileHandler(run_dir / "train.log", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger


def close_logging(logger: logging.Logger) -> None:
    """Detach and close the handlers (a second run in the same process starts clean)."""
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
