"""One hop of a causal model with every piece of history as an explicit state tensor.

The offline forward (`MaskingEnhancer._causal_forward`) on one frame: the STFT analysis of the
last n_fft samples (`STFT.analyse_frame`), the running level (`running_mean_square`, the same
function), then the one-frame forms of the same modules with the same weights (band split,
each block's `step`, the mask decoder, the causal mask taps) and the overlap-add of the inverse
frame. The one-frame forms use constant sizes, which keeps the exported graph small; the
streamer-equals-offline tests check every one of them. No state is hidden in the module, so the
step traces to a stateful ONNX graph as it stands.
"""

from __future__ import annotations

import torch
from torch import nn

from mbsnet.models.level import running_level_scale, running_mean_square
from mbsnet.models.masking import MASK_TAPS, MaskingEnhancer, filter_taps_frame

SHARED_STATES = ("analysis", "level", "taps", "synthesis")
"""The states every causal model has, first in the order of `StreamStep.state_names`; each
Mamba layer i then adds conv_i and ssm_i (conv_0 .. conv_{L-1}, then ssm_0 .. ssm_{L-1})."""


def _check_streamable(model: nn.Module) -> MaskingEnhancer:
    if not isinstance(model, MaskingEnhancer) or not model.causal:
        arch = getattr(model, "ARCH", type(model).__name__)
        raise ValueError(
            f"{arch} is not a causal model; streaming needs one (a *-causal preset, causal = true)"
        )
    if any(not hasattr(block, "step") for block in model.encoder) or not hasattr(
        model.decoder, "frame"
    ):
        raise ValueError(f"{model.ARCH} cannot run frame by frame")
    return model


class StreamStep(nn.Module):
    """``(hop samples, *states) -> (enhanced hop, *new states)`` for a causal model.

    The enhanced hop lags the input by `model.stream_delay` samples: the first
    stream_delay / hop outputs of a stream belong before its start (`Streamer` drops them).
    Shape: hop (B, hop) float32 -> (B, hop); the states, by name (`state_names`, batch first
    everywhere):

    analysis (B, n_fft - hop): the last input samples, completing the next frame.
    level (B, 2): summed power and number of the active hops so far (the running level).
    taps (B, 2, 2F): the two previous normalized frames (oldest first, real parts then
        imaginary), for the causal mask taps.
    synthesis (B, n_fft - hop): the overlap-add tail that later frames complete.
    conv_i (B, bands, d_conv - 1, conv_dim): Mamba layer i's causal-conv inputs.
    ssm_i (B, bands, nheads, headdim, d_state): Mamba layer i's scan state.

    One tensor per layer, not one stacked tensor: slicing and re-stacking a stack copies every
    state twice per hop (measured: about a tenth of the streaming graph's time).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = _check_streamable(model)
        mamba = self.model.encoder[0].time_forward
        self.n_layers = len(self.model.encoder)
        self.n_bands = self.model.layout.n_bands
        self.conv_shape = (mamba.d_conv - 1, mamba.conv_dim)
        self.ssm_shape = (mamba.nheads, mamba.headdim, mamba.d_state)

    @property
    def state_names(self) -> tuple[str, ...]:
        """The states' names, in the order `forward` takes and returns them."""
        layers = range(self.n_layers)
        return (*SHARED_STATES, *(f"conv_{i}" for i in layers), *(f"ssm_{i}" for i in layers))

    def state_shapes(self, batch: int | str = "batch") -> dict[str, tuple]:
        """Each state's shape, by name (`batch` may be a symbolic name for documentation)."""
        stft = self.model.stft
        history = stft.n_fft - stft.hop
        shared = (
            (batch, history),
            (batch, 2),
            (batch, MASK_TAPS - 1, 2 * stft.n_bins),
            (batch, history),
        )
        per_layer = [(batch, self.n_bands, *self.conv_shape)] * self.n_layers
        per_layer += [(batch, self.n_bands, *self.ssm_shape)] * self.n_layers
        return dict(zip(self.state_names, (*shared, *per_layer), strict=True))

    @property
    def hop(self) -> int:
        return self.model.stft.hop

    def initial_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        """The states before the first hop: silence everywhere (the offline zero padding)."""
        device = self.model.stft.analysis.device
        shapes = self.state_shapes(batch).values()
        return tuple(torch.zeros(*shape, device=device) for shape in shapes)

    def forward(self, hop: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        model, stft = self.model, self.model.stft
        analysis, level, taps, synthesis = states[: len(SHARED_STATES)]
        convs = states[len(SHARED_STATES) : len(SHARED_STATES) + self.n_layers]
        ssms = states[len(SHARED_STATES) + self.n_layers :]
        frame = torch.cat([analysis, hop], dim=-1)  # (B, n_fft): the frame ending with `hop`
        spec = stft.analyse_frame(frame)  # (B, 2F): flat, real parts then imaginary
        mean_square, total, count = running_mean_square(
            hop.unsqueeze(1), level[:, :1], level[:, 1:]
        )
        scale = running_level_scale(mean_square)  # (B, 1)
        normalized = spec * scale
        h = model.band_split.frame(normalized)  # (B, K, D)
        next_convs, next_ssms = [], []
        for block, conv, ssm in zip(model.encoder, convs, ssms, strict=True):
            h, conv, ssm = block.step(h, conv, ssm)  # states in their own (B, K, ...) layout
            next_convs.append(conv)
            next_ssms.append(ssm)
        mask = model.decoder.frame(h)  # (B, 3, 2F)
        window = torch.cat([taps, normalized.unsqueeze(1)], dim=1)  # frames t-2, t-1, t
        enhanced = filter_taps_frame(window, mask, stft.n_bins) / scale
        tail = torch.nn.functional.pad(synthesis, (0, stft.hop))
        added = stft.synthesize_frame(enhanced) + tail  # (B, n_fft)
        out = added[:, : stft.hop] / stft.steady_envelope()
        return (
            out,
            frame[:, stft.hop :],
            torch.cat([total, count], dim=-1),
            window[:, 1:],
            added[:, stft.hop :],
            *next_convs,
            *next_ssms,
        )
