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

from typing import NamedTuple

import torch
from torch import nn

from mbsnet.models.level import running_level_scale, running_mean_square
from mbsnet.models.masking import MASK_TAPS, MaskingEnhancer, filter_taps_frame
from mbsnet.stream.streamer import STATE_NAMES


class StreamState(NamedTuple):
    """Everything a causal model needs to remember between hops (batch first everywhere).

    Fields in the order of STATE_NAMES:

    analysis (B, n_fft - hop): the last input samples, completing the next frame.
    level (B, 2): summed power and number of the active hops so far (the running level).
    taps (B, 2, F, 2): the two previous normalized frames, for the causal mask taps.
    synthesis (B, n_fft - hop): the overlap-add tail that later frames complete.
    conv (B, layers, bands, d_conv - 1, conv_dim): each Mamba layer's causal-conv inputs.
    ssm (B, layers, bands, nheads, headdim, d_state): each Mamba layer's scan state.
    """

    analysis: torch.Tensor
    level: torch.Tensor
    taps: torch.Tensor
    synthesis: torch.Tensor
    conv: torch.Tensor
    ssm: torch.Tensor


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
    Shape: hop (B, hop) float32 -> (B, hop), states as `StreamState`.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = _check_streamable(model)
        mamba = self.model.encoder[0].time_forward
        self.n_layers = len(self.model.encoder)
        self.n_bands = self.model.layout.n_bands
        self.conv_shape = (mamba.d_conv - 1, mamba.conv_dim)
        self.ssm_shape = (mamba.nheads, mamba.headdim, mamba.d_state)

    def state_shapes(self, batch: int | str = "batch") -> dict[str, tuple]:
        """Each state's shape, by name (`batch` may be a symbolic name for documentation)."""
        stft = self.model.stft
        history = stft.n_fft - stft.hop
        layers = (batch, self.n_layers, self.n_bands)
        shapes = (
            (batch, history),
            (batch, 2),
            (batch, 2, stft.n_bins, MASK_TAPS - 1),
            (batch, history),
            (*layers, *self.conv_shape),
            (*layers, *self.ssm_shape),
        )
        return dict(zip(STATE_NAMES, shapes, strict=True))

    @property
    def hop(self) -> int:
        return self.model.stft.hop

    def initial_state(self, batch: int) -> StreamState:
        """The states before the first hop: silence everywhere (the offline zero padding)."""
        device = self.model.stft.analysis.device
        shapes = self.state_shapes(batch).values()
        return StreamState(*(torch.zeros(*shape, device=device) for shape in shapes))

    def forward(
        self,
        hop: torch.Tensor,
        analysis: torch.Tensor,
        level: torch.Tensor,
        taps: torch.Tensor,
        synthesis: torch.Tensor,
        conv: torch.Tensor,
        ssm: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        model, stft = self.model, self.model.stft
        bands = self.n_bands
        frame = torch.cat([analysis, hop], dim=-1)  # (B, n_fft): the frame ending with `hop`
        spec = stft.analyse_frame(frame)  # (B, 2, F, 1)
        mean_square, total, count = running_mean_square(
            hop.unsqueeze(1), level[:, :1], level[:, 1:]
        )
        scale = running_level_scale(mean_square)[:, :, None, None]  # (B, 1, 1, 1)
        normalized = spec * scale
        h = model.band_split.frame(normalized)  # (B, K, D)
        convs, ssms = [], []
        for index, block in enumerate(model.encoder):
            h, conv_i, ssm_i = block.step(
                h,
                conv[:, index].reshape(-1, *self.conv_shape),  # (B*K, ...): no shape reads
                ssm[:, index].reshape(-1, *self.ssm_shape),
            )
            convs.append(conv_i.reshape(-1, bands, *self.conv_shape))
            ssms.append(ssm_i.reshape(-1, bands, *self.ssm_shape))
        mask = model.decoder.frame(h)  # (B, 3, 2, F)
        window = torch.cat([taps, normalized], dim=-1)  # frames t-2, t-1, t
        enhanced = filter_taps_frame(window, mask) / scale
        tail = torch.nn.functional.pad(synthesis, (0, stft.hop))
        added = stft.synthesize_frame(enhanced) + tail  # (B, n_fft)
        out = added[:, : stft.hop] / stft.steady_envelope()
        return (
            out,
            frame[:, stft.hop :],
            torch.cat([total, count], dim=-1),
            window[..., 1:],
            added[:, stft.hop :],
            torch.stack(convs, dim=1),
            torch.stack(ssms, dim=1),
        )
