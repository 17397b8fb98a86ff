"""Model registry: architectures, presets and their declared parameter budgets."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from mbsnet.models.bsrnn import BSRNN, BSRNNConfig
from mbsnet.models.mamba2 import Mamba2
from mbsnet.models.mbsnet import MBSNet, MBSNetConfig

ARCHS: dict[str, tuple[type[nn.Module], type]] = {
    MBSNet.ARCH: (MBSNet, MBSNetConfig),
    BSRNN.ARCH: (BSRNN, BSRNNConfig),
}

# Shapes chosen by measurement (benchmarks/bench_model.py): on a 2-core CPU, time is bound by
# memory traffic of the layer's element-wise work, which scales with d_inner = expand * d_model,
# so expand=1 with more depth beats expand=2 at equal speed. Chunk sizes are the measured best.
# Every preset has an even number of heads, so mamba_ssm's fused kernel gets aligned strides
# (`mamba2.fused_padding`); tiny uses headdim 16 (2 heads) for that, which costs it about 12% of
# forward speed on the CPU (10 s, 2 threads, one run: RTF 0.0326 vs 0.0291 with headdim 32;
# chunk 16 stays the best: 0.0405 at 8, 0.0361 at 32).
PRESETS: dict[str, MBSNetConfig] = {
    "tiny": MBSNetConfig(
        d_model=32, n_layers=3, expand=1, headdim=16, chunk_size=16, mask_hidden=8
    ),
    "base": MBSNetConfig(
        d_model=64, n_layers=5, expand=1, headdim=32, chunk_size=32, mask_hidden=32
    ),
    # For GPU users: the seeds' 2.3M budget (6 heads, so mamba_ssm's fused kernel applies).
    "large": MBSNetConfig(
        d_model=192,
        n_layers=8,
        expand=1,
        headdim=32,
        chunk_size=32,
        mixer_hidden=128,
        mask_hidden=64,
    ),
}
# Causal (streamable) twins with forward-only time layers (mbsnet.stream). tiny-causal keeps
# tiny's shape (the real-time target is per-hop compute); base-causal gets 8 blocks so it keeps
# about base's number of Mamba layers and its decoder stays within DECODER_SHARE_LIMIT.
PRESETS["tiny-causal"] = dataclasses.replace(PRESETS["tiny"], bidirectional=False, causal=True)
PRESETS["base-causal"] = dataclasses.replace(
    PRESETS["base"], n_layers=8, bidirectional=False, causal=True
)
DEFAULT_PRESET = "base"

PARAM_BUDGETS: dict[str, int] = {
    "tiny": 500_000,
    "base": 2_300_000,
    "large": 2_300_000,
    "tiny-causal": 500_000,
    "base-causal": 2_300_000,
}
"""Declared ceilings (targets, not measurements): tests assert every preset stays within its own."""

DECODER_SHARE_LIMIT = 0.25
"""The mask decoder may hold at most this fraction of an MBS-Net's parameters."""


def preset_config(name: str) -> MBSNetConfig:
    """The MBS-Net configuration of a named preset."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None


def config_from_dict(config_cls: type, values: dict[str, Any], owner: str) -> Any:
    """A config dataclass from plain data (e.g. a checkpoint), naming fields `owner` lacks."""
    known = {field.name for field in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"config fields not in {owner}: {', '.join(unknown)}")
    return config_cls(**values)


def create_model(arch: str, config: Any = None) -> nn.Module:
    """Build a model from its registry name and a config dataclass or plain dict.

    Raises ValueError for an unknown arch or config fields the arch does not have.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    model_cls, config_cls = ARCHS[arch]
    if config is None:
        config = config_cls()
    elif isinstance(config, dict):
        config = config_from_dict(config_cls, config, arch)
    elif not isinstance(config, config_cls):
        raise ValueError(f"{arch} needs a {config_cls.__name__}, got {type(config).__name__}")
    return model_cls(config)


def set_memory_saving(model: nn.Module, checkpoint_blocks: bool, recompute_mamba: bool) -> None:
    """Runtime switches that trade training time for memory; results and checkpoints unchanged.

    checkpoint_blocks: recompute whole encoder blocks in backward (MaskingEnhancer).
    recompute_mamba: keep only each Mamba-2 layer's in_proj output for backward and recompute
    its conv, scan and gated norm there (measured: about 25% more step time on the CPU, and
    the base preset's saved tensors at batch 4 x 2 s fall from 2.7 GB to 0.72 GB).
    """
    model.checkpoint_blocks = checkpoint_blocks
    for module in model.modules():
        if isinstance(module, Mamba2):
            module.recompute_mix = recompute_mamba


def model_device(model: nn.Module) -> torch.device:
    """Where a model's parameters live (the CPU for a model without any)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters in a module tree (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "ARCHS",
    "BSRNN",
    "DECODER_SHARE_LIMIT",
    "DEFAULT_PRESET",
    "PARAM_BUDGETS",
    "PRESETS",
    "BSRNNConfig",
    "MBSNet",
    "MBSNetConfig",
    "count_parameters",
    "create_model",
    "model_device",
    "preset_config",
    "set_memory_saving",
]
