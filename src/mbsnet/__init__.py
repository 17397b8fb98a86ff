"""mbsnet: a compact, trustworthy speech-enhancement toolkit built around MBS-Net."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mbsnet")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

SAMPLE_RATE = 16_000
"""The rate every model in this package runs at; other rates are resampled with soxr."""
