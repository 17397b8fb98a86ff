"""A causal PyTorch model as a `HopRunner` of `mbsnet.stream.Streamer`."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mbsnet.models import model_device
from mbsnet.stream.step import StreamStep


class TorchHopRunner:
    """`StreamStep` of `model` on the model's device, in inference mode; states stay tensors."""

    def __init__(self, model: nn.Module) -> None:
        self.step = StreamStep(model.eval()).eval()
        self.device = model_device(model)
        self.hop = self.step.hop
        self.delay = self.step.model.stream_delay
        self.description = f"PyTorch {self.step.model.ARCH} (streaming) on {self.device}"

    def initial_state(self, channels: int) -> tuple[torch.Tensor, ...]:
        return self.step.initial_state(channels)

    @torch.inference_mode()
    def __call__(
        self, hop: np.ndarray, state: tuple[torch.Tensor, ...]
    ) -> tuple[np.ndarray, tuple[torch.Tensor, ...]]:
        out, *new_state = self.step(torch.from_numpy(hop).to(self.device), *state)
        return out.cpu().numpy(), tuple(new_state)
