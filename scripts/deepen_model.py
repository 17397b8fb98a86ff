"""Grow a trained MBS-Net by encoder blocks that start as the identity (a capacity experiment).

Run: .venv/bin/python scripts/deepen_model.py CKPT --n-layers N -o OUT
     .venv/bin/mbsnet train --init OUT ...

The new blocks are appended after the trained ones with their output projections (Mamba-2's
`out_proj`, the band mixer's last layer) at zero, so each adds exactly nothing: OUT enhances as
CKPT does, sample for sample, and training goes on from there with more capacity instead of
from scratch. Writes a model-only checkpoint, as `scripts/bundle_weights.py` does, whose
`extra["deepened_from"]` names the source (sha256) and its layer count.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from mbsnet.checkpoint import file_sha256, load_checkpoint, model_from_checkpoint, save_checkpoint
from mbsnet.models import create_model
from mbsnet.models.mbsnet import EncoderBlock, MBSNet


def _zero_output(block: EncoderBlock) -> None:
    """Make a pre-norm residual block add nothing (its input passes through unchanged)."""
    with torch.no_grad():
        for mamba in (block.time_forward, block.time_backward):
            if mamba is not None:
                mamba.out_proj.weight.zero_()
        block.band_mixer.fc2.weight.zero_()
        block.band_mixer.fc2.bias.zero_()


def deepen(model: MBSNet, n_layers: int, seed: int = 0) -> MBSNet:
    """`model` with its encoder grown to `n_layers` blocks; the new ones start as the identity."""
    if not isinstance(model, MBSNet):
        raise ValueError(f"only MBS-Net models can be deepened, not {type(model).__name__}")
    have = model.config.n_layers
    if n_layers <= have:
        raise ValueError(f"the model already has {have} blocks; ask for more than that")
    torch.manual_seed(seed)  # the new blocks' inner weights
    grown = create_model(MBSNet.ARCH, {**dataclasses.asdict(model.config), "n_layers": n_layers})
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("encoder.") for k in missing), (missing, unexpected)
    for block in list(grown.encoder)[have:]:
        _zero_output(block)
    return grown.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--n-layers", type=int, required=True, help="blocks after growing")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="seed of the new blocks' weights")
    args = parser.parse_args()
    ckpt = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(ckpt)
    grown = deepen(model, args.n_layers, args.seed)
    source = {"sha256": file_sha256(args.checkpoint), "n_layers": model.config.n_layers}
    save_checkpoint(args.output, grown, extra={"deepened_from": source})
    count = sum(p.numel() for p in grown.parameters())
    print(f"{args.output}: {model.config.n_layers} -> {args.n_layers} blocks, {count:,} parameters")


if __name__ == "__main__":
    main()
