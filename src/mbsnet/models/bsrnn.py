"""BSRNN baseline (Luo & Yu): LSTM over time within each band, BLSTM across bands, MLP mask head.

It shares the band split, mask application, STFT and level normalization with MBS-Net, so an
A/B comparison changes only the sequence modelling and the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mbsnet.models.bands import BandLayout, BandToBins
from mbsnet.models.masking import MASK_TAPS, MaskingEnhancer


@dataclass(frozen=True)
class BSRNNConfig:
    """Hyper-parameters of the BSRNN baseline (N = 64 channels, L = 5 blocks as published)."""

    n_fft: int = 512
    hop: int = 128
    d_model: int = 64
    n_layers: int = 5


class BSRNNBlock(nn.Module):
    """Residual LSTM over time (per band), then residual BLSTM over bands (per frame)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        hidden = 2 * d_model
        self.time_norm = nn.GroupNorm(1, d_model)
        self.time_rnn = nn.LSTM(d_model, hidden, batch_first=True)
        self.time_fc = nn.Linear(hidden, d_model)
        self.band_norm = nn.GroupNorm(1, d_model)
        self.band_rnn = nn.LSTM(d_model, hidden, batch_first=True, bidirectional=True)
        self.band_fc = nn.Linear(2 * hidden, d_model)

    @staticmethod
    def _group_norm(norm: nn.GroupNorm, h: torch.Tensor) -> torch.Tensor:
        """GroupNorm over channels of every (band, frame) vector. Shape: (B, K, T, D)."""
        b, k, t, d = h.shape
        return norm(h.reshape(-1, d)).view(b, k, t, d)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, k, t, d = h.shape
        z = self._group_norm(self.time_norm, h).reshape(b * k, t, d)
        h = h + self.time_fc(self.time_rnn(z)[0]).view(b, k, t, d)
        z = self._group_norm(self.band_norm, h).transpose(1, 2).reshape(b * t, k, d)
        y = self.band_fc(self.band_rnn(z)[0]).view(b, t, k, d).transpose(1, 2)
        return h + y


class BSRNNDecoder(nn.Module):
    """Per-band MLP (norm, D -> 4D, tanh, -> 2 x mask values, GLU), as in BSRNN."""

    def __init__(self, layout: BandLayout, d_model: int) -> None:
        super().__init__()
        hidden = 4 * d_model
        self.norm = nn.GroupNorm(1, d_model)
        bound = d_model**-0.5
        self.fc1_weight = nn.Parameter(
            torch.empty(layout.n_bands, d_model, hidden).uniform_(-bound, bound)
        )
        self.fc1_bias = nn.Parameter(torch.zeros(layout.n_bands, hidden))
        self.fc2 = BandToBins(layout, hidden, 2 * MASK_TAPS * 2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, k, t, d = h.shape
        z = self.norm(h.reshape(-1, d)).view(b, k, t, d)
        z = torch.tanh(torch.matmul(z, self.fc1_weight) + self.fc1_bias[:, None, :])
        values, gates = self.fc2(z).chunk(2, dim=1)  # (B, 6, F, T) each
        return (values * torch.sigmoid(gates)).unflatten(1, (MASK_TAPS, 2))


class BSRNN(MaskingEnhancer):
    """Band-split RNN baseline behind the same interface as MBS-Net."""

    ARCH = "bsrnn"

    def __init__(self, config: BSRNNConfig | None = None) -> None:
        config = config or BSRNNConfig()
        super().__init__(config)
        self.encoder.extend(BSRNNBlock(config.d_model) for _ in range(config.n_layers))
        self.decoder = BSRNNDecoder(self.layout, config.d_model)
