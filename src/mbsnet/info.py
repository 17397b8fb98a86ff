"""What a model is: parameters per top-level module and multiply-accumulates per second of audio.

Every number here is computed from the module tree or counted while running it, never typed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mbsnet.models import count_parameters, model_device

MACS_PROBE_SECONDS = 4.0
"""Length of the probe signal for counting MACs; the count is divided back to one second."""


@dataclass(frozen=True)
class ModelInfo:
    """A model's description as printed by `mbsnet info`."""

    arch: str
    config: dict
    parameters: dict[str, int]  # top-level module -> parameters under it
    total_parameters: int
    macs_per_second: int
    source: str
    latency: dict | None = None
    """Causal models: window, hop and lookahead (ms), algorithmic latency (ms) and the delay
    of the streamed output (samples), from `latency_of`; None for offline models."""

    def to_json_dict(self) -> dict:
        return asdict(self)


def parameters_by_module(model: nn.Module) -> dict[str, int]:
    """Parameters under each direct child of `model` (children without parameters omitted)."""
    table = {name: count_parameters(child) for name, child in model.named_children()}
    own = sum(p.numel() for p in model.parameters(recurse=False))
    if own:
        table["(own)"] = own
    return {name: n for name, n in table.items() if n}


def _addcmul_flops(*shapes: Any, out_shape: Any = None, **_: Any) -> int:
    """addcmul(x, a, b) = x + a * b: one multiply-accumulate (2 flops) per output element."""
    return 2 * math.prod(out_shape)


# Mamba-2's depthwise causal conv runs as shifted addcmul (mbsnet.models.mamba2), which
# FlopCounterMode does not count on its own.
_EXTRA_FLOPS = {torch.ops.aten.addcmul: _addcmul_flops}


def count_macs_per_second(model: nn.Module, seconds: float = MACS_PROBE_SECONDS) -> int:
    """Multiply-accumulates of one forward pass, per second of 16 kHz mono audio.

    Counted with torch's FlopCounterMode (matmuls, convolutions, recurrent cells, plus
    addcmul: the causal conv of the Mamba layers) on a probe signal of `seconds` seconds, so it
    covers the STFT, the scan and the mask head alike. Other element-wise operations are not
    MACs and are not counted.
    """
    n_samples = int(seconds * model.sample_rate)
    probe = torch.randn(1, n_samples, generator=torch.Generator().manual_seed(0))
    device = model_device(model)
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOPS)
    with torch.inference_mode(), counter:
        model(probe.to(device))
    return round(counter.get_total_flops() / 2 / seconds)


def latency_of(model: nn.Module) -> dict | None:
    """A causal model's latency figures, computed from its framing; None if not causal."""
    if not getattr(model, "causal", False):
        return None
    stft, rate = model.stft, model.sample_rate
    ms = lambda samples: 1000 * samples / rate  # noqa: E731
    return {
        "window_ms": ms(stft.n_fft),
        "hop_ms": ms(stft.hop),
        "lookahead_frames": model.lookahead,
        "lookahead_ms": ms(model.lookahead * stft.hop),
        "algorithmic_latency_ms": ms(model.latency_samples),
        "stream_delay_samples": model.stream_delay,
    }


def describe(model: nn.Module, source: str) -> ModelInfo:
    """Collect a model's `ModelInfo`."""
    return ModelInfo(
        arch=model.ARCH,
        config=asdict(model.config),
        parameters=parameters_by_module(model),
        total_parameters=count_parameters(model),
        macs_per_second=count_macs_per_second(model),
        source=source,
        latency=latency_of(model),
    )


def format_info(info: ModelInfo) -> str:
    """A plain-text table of `info` for the terminal."""
    width = max(len(name) for name in [*info.parameters, "total"]) + 2
    lines = [f"{info.arch} ({info.source})", f"{'module':<{width}}{'parameters':>12}{'share':>8}"]
    for name, count in info.parameters.items():
        share = count / info.total_parameters
        lines.append(f"{name:<{width}}{count:>12,}{share:>8.1%}")
    lines.append(f"{'total':<{width}}{info.total_parameters:>12,}{1:>8.0%}")
    lines.append(f"MACs per second of audio: {info.macs_per_second / 1e6:,.1f} M")
    if info.latency is not None:
        lat = info.latency
        lines.append(
            f"causal: algorithmic latency {lat['algorithmic_latency_ms']:g} ms = window "
            f"{lat['window_ms']:g} ms + lookahead {lat['lookahead_frames']} x {lat['hop_ms']:g} "
            f"ms hop; streamed output lags the input by {lat['stream_delay_samples']} samples"
        )
    config = ", ".join(f"{key}={value}" for key, value in info.config.items())
    lines.append(f"config: {config}")
    return "\n".join(lines)
