"""scripts/deepen_model.py grows an MBS-Net by blocks that change nothing until trained."""

from __future__ import annotations

import pytest
import torch

from mbsnet.checkpoint import model_from_checkpoint, save_checkpoint
from mbsnet.models import create_model
from tests.conftest import load_script

SMALL = {"d_model": 16, "n_layers": 2, "headdim": 8, "chunk_size": 8, "mask_hidden": 4}


def _trained_like(seed: int = 0):
    torch.manual_seed(seed)
    model = create_model("mbsnet", SMALL)
    with torch.no_grad():  # no zero weights left from initialisation
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    return model.eval()


def test_deepened_model_enhances_exactly_as_the_source(tmp_path):
    script = load_script("deepen_model")
    model = _trained_like()
    grown = script.deepen(model, 4)
    assert grown.config.n_layers == 4 and len(grown.encoder) == 4
    noisy = 0.1 * torch.randn(1, 8000)
    with torch.no_grad():
        assert torch.equal(grown(noisy), model(noisy))
    # The checkpoint round trip, as `mbsnet train --init` reads it.
    save_checkpoint(tmp_path / "grown.pt", grown)
    loaded = model_from_checkpoint(tmp_path / "grown.pt")
    with torch.no_grad():
        assert torch.equal(loaded(noisy), model(noisy))


def test_new_blocks_learn(tmp_path):
    grown = load_script("deepen_model").deepen(_trained_like(), 3).train()
    grown(0.1 * torch.randn(1, 8000)).square().mean().backward()
    new = grown.encoder[2]
    assert new.time_forward.out_proj.weight.grad.abs().sum() > 0
    assert new.band_mixer.fc2.weight.grad.abs().sum() > 0


def test_refuses_to_shrink():
    with pytest.raises(ValueError, match="already has 2 blocks"):
        load_script("deepen_model").deepen(_trained_like(), 2)
