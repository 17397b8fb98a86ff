"""Objective metrics: wideband PESQ, CSIG/CBAK/COVL, segmental SNR, STOI, ESTOI and SI-SDR.

No torch import here: :func:`compute_metrics` is meant to run in worker processes.
"""

from mbsnet.eval.composite import (
    FrameMeasures,
    composite_components,
    composite_metrics,
    composite_scores,
    frame_measures,
)
from mbsnet.eval.metrics import (
    EXTENDED_METRICS,
    METRICS,
    MetricResult,
    MetricUnavailable,
    compute_metrics,
    pesq_score,
    pesq_wb,
    si_sdr,
    stoi,
)

__all__ = [
    "EXTENDED_METRICS",
    "METRICS",
    "FrameMeasures",
    "MetricResult",
    "MetricUnavailable",
    "composite_components",
    "composite_metrics",
    "composite_scores",
    "compute_metrics",
    "frame_measures",
    "pesq_score",
    "pesq_wb",
    "si_sdr",
    "stoi",
]
