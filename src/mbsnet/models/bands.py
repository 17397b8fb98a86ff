"""Band layout and the vectorized per-band input and output projections.

Every band has its own weights, yet the hot path runs one batched matmul over all bands: the
per-bin weights are stored flat (so the parameter count is exact, no padding parameters) and
gathered into a zero-padded (K, W_max) layout on each call.
"""

from __future__ import annotations

import torch
from torch import nn

# BSRNN's band layout for 16 kHz, n_fft 512: one band of 2 bins, ten of 3, twelve of 8, seven of
# 16 and one of 17 (31 bands, 257 bins in all).
BAND_WIDTHS_16K: tuple[int, ...] = (2,) + (3,) * 10 + (8,) * 12 + (16,) * 7 + (17,)


class BandLayout(nn.Module):
    """Index tensors that map frequency bins to a zero-padded (band, slot) grid.

    Buffers (non-persistent):
        bin_index (K, W): the bin held by each slot (0 for padding slots)
        slot_mask (K, W): 1 for real slots, 0 for padding
        valid_slots (F,): flat slot index of every bin, in bin order (undoes the padding)
        frame_slots (K, 2W): for slot w of band k, real and imaginary part side by side, the
            position in a flat (2F,) frame spectrum (real parts, then imaginary; streaming)
    """

    def __init__(self, band_widths: tuple[int, ...], n_bins: int) -> None:
        super().__init__()
        if sum(band_widths) != n_bins or min(band_widths) < 1:
            raise ValueError(f"band widths {band_widths} do not cover {n_bins} bins exactly")
        self.band_widths = tuple(band_widths)
        self.n_bands = len(band_widths)
        self.max_width = max(band_widths)
        self.n_bins = n_bins
        bin_index = torch.zeros(self.n_bands, self.max_width, dtype=torch.long)
        slot_mask = torch.zeros(self.n_bands, self.max_width)
        start = 0
        for k, width in enumerate(band_widths):
            bin_index[k, :width] = torch.arange(start, start + width)
            slot_mask[k, :width] = 1.0
            start += width
        valid_slots = torch.nonzero(slot_mask.flatten()).squeeze(1)
        self.register_buffer("bin_index", bin_index, persistent=False)
        self.register_buffer("slot_mask", slot_mask, persistent=False)
        self.register_buffer("valid_slots", valid_slots, persistent=False)
        frame_slots = torch.stack([bin_index, bin_index + n_bins], dim=-1).flatten(1)
        self.register_buffer("frame_slots", frame_slots, persistent=False)

    def gather_bins(self, per_bin: torch.Tensor) -> torch.Tensor:
        """Arrange a per-bin table into the padded band grid, padding slots zeroed.

        Shape: per_bin (F, *rest) -> (K, W, *rest).
        """
        grid = per_bin[self.bin_index]
        mask = self.slot_mask.view(*self.slot_mask.shape, *([1] * (per_bin.dim() - 1)))
        return grid * mask


class BandSplit(nn.Module):
    """Per-band normalization and projection of the complex spectrum to `d_model` channels.

    Each band's real and imaginary bins (2 * width features) are layer-normalized over that
    band alone and projected by that band's own linear map.
    Shape: spectrum (B, 2, F, T) -> features (B, K, T, d_model).
    """

    def __init__(self, layout: BandLayout, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.layout = layout
        self.eps = eps
        n_bins = layout.n_bins
        self.norm_weight = nn.Parameter(torch.ones(n_bins, 2))
        self.norm_bias = nn.Parameter(torch.zeros(n_bins, 2))
        self.weight = nn.Parameter(torch.empty(n_bins, 2, d_model))
        self.bias = nn.Parameter(torch.zeros(layout.n_bands, d_model))
        # Same scale as nn.Linear's default init, computed from each band's own fan-in.
        widths = torch.tensor(layout.band_widths, dtype=torch.float32)
        bound = (1.0 / (2 * widths)).sqrt().repeat_interleave(torch.tensor(layout.band_widths))
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0).mul_(bound.view(-1, 1, 1))

    def frame(self, spec: torch.Tensor) -> torch.Tensor:
        """`forward` on one frame (streaming): the band slots are one gather, no permute.

        Shape: flat spectrum (B, 2F), real parts then imaginary -> features (B, K, d_model).
        """
        return self._project(spec[:, self.layout.frame_slots])  # (B, K, W*2)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        layout = self.layout
        bands = spec[:, :, layout.bin_index]  # (B, 2, K, W, T)
        bands = bands.permute(0, 2, 4, 3, 1).flatten(3)  # (B, K, T, W*2)
        return self._project(bands)

    def _project(self, bands: torch.Tensor) -> torch.Tensor:
        """Per-band normalization and projection of the (..., K, [T,] W*2) band slots.

        Shape: (B, K, T, W*2) -> (B, K, T, d_model), or (B, K, W*2) -> (B, K, d_model).
        """
        layout = self.layout
        frame = bands.dim() == 3
        time_axis = (lambda t: t) if frame else (lambda t: t[:, None, :])
        mask = time_axis(layout.slot_mask.repeat_interleave(2, dim=1))  # (K, [1,] W*2)
        count = mask.sum(-1, keepdim=True)
        mean = (bands * mask).sum(-1, keepdim=True) / count
        centred = (bands - mean) * mask
        var = centred.pow(2).sum(-1, keepdim=True) / count
        normed = centred * torch.rsqrt(var + self.eps)
        gain = time_axis(layout.gather_bins(self.norm_weight).flatten(1))  # (K, [1,] W*2)
        shift = time_axis(layout.gather_bins(self.norm_bias).flatten(1))
        normed = normed * gain + shift
        weight = layout.gather_bins(self.weight).flatten(1, 2)  # (K, W*2, D)
        if frame:  # a batched matmul over the bands (measured faster than einsum in onnxruntime)
            return (normed.unsqueeze(-2) @ weight).squeeze(-2) + self.bias
        return torch.matmul(normed, weight) + self.bias[:, None, :]


class BandToBins(nn.Module):
    """Per-band linear map from band features to `out_per_bin` values for each of its bins.

    Shape: features (B, K, T, d_in) -> (B, out_per_bin, F, T).
    """

    def __init__(self, layout: BandLayout, d_in: int, out_per_bin: int) -> None:
        super().__init__()
        self.layout = layout
        self.out_per_bin = out_per_bin
        bound = d_in**-0.5
        weight = torch.empty(layout.n_bins, out_per_bin, d_in).uniform_(-bound, bound)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(layout.n_bins, out_per_bin))

    def frame(self, features: torch.Tensor) -> torch.Tensor:
        """`forward` on one frame, with constant sizes (streaming).

        Shape: features (B, K, d_in) -> (B, out_per_bin, F).
        """
        layout = self.layout
        weight = layout.gather_bins(self.weight).flatten(1, 2)  # (K, W*O, d_in)
        bias = layout.gather_bins(self.bias).flatten(1)  # (K, W*O)
        out = features.unsqueeze(-2) @ weight.transpose(1, 2)  # (B, K, 1, W*O)
        out = out.reshape(-1, layout.n_bands, weight.shape[1]) + bias
        out = out.reshape(-1, layout.n_bands * layout.max_width, self.out_per_bin)
        return out.index_select(1, layout.valid_slots).transpose(1, 2)  # (B, O, F)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # The transposed product W (K, W*O, d_in) @ features^T (K, d_in, B*T) puts the (band,
        # slot) axes first, so dropping the padding slots is one gather and the result needs no
        # permute copy; only the narrow input (d_in channels) is transposed.
        layout = self.layout
        batch, bands, frames, d_in = features.shape
        weight = layout.gather_bins(self.weight).flatten(1, 2)  # (K, W*O, d_in)
        bias = layout.gather_bins(self.bias).flatten(1).unsqueeze(-1)  # (K, W*O, 1)
        columns = features.permute(1, 3, 0, 2).reshape(bands, d_in, -1)  # (K, d_in, B*T)
        out = torch.baddbmm(bias, weight, columns)  # (K, W*O, B*T)
        out = out.reshape(bands * layout.max_width, self.out_per_bin, batch, frames)
        out = out.index_select(0, layout.valid_slots)  # (F, O, B, T)
        return out.permute(2, 1, 0, 3)  # (B, O, F, T), a view
