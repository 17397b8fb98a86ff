"""Mamba-2 layer whose parameters match `mamba_ssm.Mamba2`, running on the pure-PyTorch SSD scan.

The state dict (names, shapes, meaning) is that of `mamba_ssm.modules.mamba2.Mamba2` with
`rmsnorm=True`, no biases, `D_has_hdim=False` and no learnable initial states, so checkpoints move
between this module and upstream. On CUDA the same parameters can instead be fed to mamba_ssm's
fused Triton kernel; the environment variable MBSNET_SSM_KERNEL picks the path:

- `auto` (default): the fused kernel for CUDA inputs when `mamba_ssm` (and `causal_conv1d`)
  import, the PyTorch path otherwise;
- `torch`: always the PyTorch path;
- `mamba_ssm`: the fused kernel for CUDA inputs, and an error if it does not import.

CPU inputs, tracing and ONNX export always take the PyTorch path. `mamba_ssm` is imported lazily,
at the first CUDA forward, never when this module is imported (it fails on CPU-only machines).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mbsnet.models.precision import autocast_off
from mbsnet.models.ssd import DEFAULT_CHUNK_SIZE, ssd_scan
from mbsnet.tracing import is_exporting

KERNEL_ENV = "MBSNET_SSM_KERNEL"
KERNEL_CHOICES = ("auto", "torch", "mamba_ssm")
# The chunk size handed to the fused kernel: mamba_ssm's own default, which its Triton kernels are
# tuned for. The chunk size changes speed only (results agree to rounding), so the CPU-tuned
# `chunk_size` of the PyTorch path is not reused there.
FUSED_CHUNK_SIZE = 256
FUSED_WIDTH_MULTIPLE = 8
"""causal-conv1d's channel-last path (used inside the fused kernel, forward and backward) needs
the row stride of in_proj's output, and of the conv channels, to be a multiple of this."""


@functools.cache
def _import_fused_kernel() -> tuple[Callable[..., Tensor] | None, str]:
    """(mamba_ssm's fused Mamba-2 kernel, "") if it imports, else (None, the reason). Cached."""
    try:
        # mamba_ssm imports without causal_conv1d but then fails inside the fused kernel.
        import causal_conv1d  # noqa: F401
        from mamba_ssm.ops.triton.ssd_combined import mamba_split_conv1d_scan_combined
    except Exception as exc:  # ImportError, but also triton/CUDA errors raised at import
        return None, f"{type(exc).__name__}: {exc}"
    return mamba_split_conv1d_scan_combined, ""


def kernel_setting() -> str:
    """The validated value of MBSNET_SSM_KERNEL (default "auto")."""
    setting = os.environ.get(KERNEL_ENV, "auto").strip().lower() or "auto"
    if setting not in KERNEL_CHOICES:
        raise ValueError(f"{KERNEL_ENV}={setting!r}; choose one of {', '.join(KERNEL_CHOICES)}")
    return setting


def resolve_kernel(device: torch.device | str) -> str:
    """Which implementation a forward on `device` uses: "torch" or "mamba_ssm".

    Raises RuntimeError when MBSNET_SSM_KERNEL=mamba_ssm asks for the fused kernel on a CUDA
    device and it cannot be imported.
    """
    setting = kernel_setting()
    if setting == "torch" or torch.device(device).type != "cuda":
        return "torch"
    kernel, why = _import_fused_kernel()
    if kernel is not None:
        return "mamba_ssm"
    if setting == "mamba_ssm":
        raise RuntimeError(
            f"{KERNEL_ENV}=mamba_ssm but mamba_ssm's fused kernel does not import ({why}). "
            "Install it on the CUDA machine with `pip install mamba-ssm causal-conv1d "
            f"--no-build-isolation`, or set {KERNEL_ENV}=torch (or auto) for the PyTorch path."
        )
    return "torch"


def fused_padding(d_in_proj: int, conv_dim: int) -> int | None:
    """Zero channels to put in front of in_proj's output for the fused kernel, or None.

    The fused kernel reads 2·d_nonssm leading channels as a SwiGLU branch silu(z0)·x0 whose
    output goes through out_proj beside the SSM's (upstream Mamba2's `d_mlp`). Zero rows there
    and zero columns in out_proj add exactly nothing, and they widen the row stride to a multiple
    of FUSED_WIDTH_MULTIPLE. That only works for an even pad, so an odd width (an odd number of
    heads) or a conv width off the multiple cannot be aligned: None.
    """
    pad = -d_in_proj % FUSED_WIDTH_MULTIPLE
    if pad % 2 or conv_dim % FUSED_WIDTH_MULTIPLE:
        return None
    return pad


def _exporting() -> bool:
    """True while tracing or exporting (either ONNX exporter), where only the PyTorch path can be
    recorded."""
    return is_exporting()


def _scan_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the scan runs in: float32 for half types (its exps and long sums need it)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _init_dt_bias(nheads: int, dt_min: float, dt_max: float, dt_floor: float) -> Tensor:
    """dt_bias = softplus⁻¹(dt) with dt log-uniform in [dt_min, dt_max], floored. Shape: (h,)."""
    log_dt = torch.rand(nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    dt = torch.exp(log_dt).clamp(min=dt_floor)
    # softplus(y) = dt  <=>  y = dt + log(1 - exp(-dt)), written with expm1 for small dt
    return dt + torch.log(-torch.expm1(-dt))


class RMSNormGated(nn.Module):
    """RMSNorm of y·silu(z) over groups of `group_size` channels, times a learned weight.

    This is mamba_ssm's RMSNormGated with norm_before_gate=False (gate first, then normalize).

    Shape: y (..., d), z (..., d) -> (..., d).
    """

    def __init__(self, d: int, group_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.group_size = group_size
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        if self.group_size == self.weight.shape[0]:  # one group: no reshape (fewer graph ops)
            gated = y * F.silu(z)
            normed = gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + self.eps)
            return normed * self.weight.to(normed.dtype)
        # reshape with traced sizes, not unflatten/flatten: those bake sizes into an ONNX trace
        gated = (y * F.silu(z)).reshape(*y.shape[:-1], -1, self.group_size)
        normed = gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.reshape(y.shape) * self.weight.to(normed.dtype)


class Mamba2(nn.Module):
    """Mamba-2 mixer: in_proj, causal depthwise conv, SSD scan + D skip, gated RMSNorm, out_proj.

    Parameters (exactly these, with mamba_ssm's names and shapes): in_proj.weight, conv1d.weight,
    conv1d.bias, dt_bias, A_log, D, norm.weight, out_proj.weight.

    Shape: u (B, L, d_model) -> (B, L, d_model). Causal along L; a bidirectional model runs a
    second instance on the time-reversed input itself.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 32,
        ngroups: int = 1,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.headdim, self.ngroups, self.chunk_size = headdim, ngroups, chunk_size
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"expand*d_model={self.d_inner} is not a multiple of {headdim=}")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"nheads={self.nheads} is not a multiple of {ngroups=}")
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        d_in_proj = self.d_inner + self.conv_dim + self.nheads
        self.fused_padding = fused_padding(d_in_proj, self.conv_dim)

        self.in_proj = nn.Linear(d_model, d_in_proj, bias=False)
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, padding=d_conv - 1
        )
        self.dt_bias = nn.Parameter(_init_dt_bias(self.nheads, dt_min, dt_max, dt_init_floor))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(1.0, 16.0)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        for param in (self.dt_bias, self.A_log, self.D):
            param._no_weight_decay = True  # read by optimizers' param-group builders
        self.norm = RMSNormGated(self.d_inner, group_size=self.d_inner // ngroups, eps=1e-5)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        # Recompute conv, scan and gated norm in backward (see `forward`): a runtime switch for
        # memory (`mbsnet.models.set_memory_saving`), not part of the architecture or checkpoint.
        self.recompute_mix = True

    def forward(self, u: Tensor) -> Tensor:
        if not _exporting() and resolve_kernel(u.device) == "mamba_ssm":
            if self.fused_padding is not None:
                return self._fused_forward(u)
            if kernel_setting() != "mamba_ssm":
                warnings.warn(
                    f"Mamba2 widths (in_proj {self.in_proj.out_features}, conv {self.conv_dim}) "
                    f"cannot be aligned to {FUSED_WIDTH_MULTIPLE} for mamba_ssm's fused kernel; "
                    "running the PyTorch path",
                    stacklevel=2,
                )
            else:
                raise RuntimeError(
                    f"{KERNEL_ENV}=mamba_ssm, but this layer's widths (in_proj "
                    f"{self.in_proj.out_features}, conv {self.conv_dim}) cannot be aligned to "
                    f"{FUSED_WIDTH_MULTIPLE} for the fused kernel; use an even number of heads "
                    f"(expand*d_model/headdim) and a conv width (d_inner + 2*ngroups*d_state) "
                    f"divisible by {FUSED_WIDTH_MULTIPLE}, or set {KERNEL_ENV}=torch"
                )
        zxbcdt = self.in_proj(u)
        if self.recompute_mix and torch.is_grad_enabled() and not _exporting():
            # Keep only in_proj's output for backward and recompute conv, scan and gated norm
            # there, as mamba_ssm's fused kernel does: autograd would otherwise hold ~20 tensors
            # of the layer's width per token (measured: 2.7 GB -> under 1 GB for a base model
            # at batch 4 x 2 s) for ~25% more time per training step.
            y = checkpoint(self._mix, zxbcdt, use_reentrant=False)
        else:
            y = self._mix(zxbcdt)
        return self.out_proj(y)

    def _mix(self, zxbcdt: Tensor) -> Tensor:
        """Everything between the two projections: conv, scan with D skip, gated RMSNorm.

        Shape: (B, L, d_in_proj) -> (B, L, d_inner).
        """
        groups_width = self.ngroups * self.d_state
        if _exporting():
            # x, B and C each get their own conv (the conv is per channel), so the graph splits
            # in_proj's output once, which `split_projections` turns into one MatMul per part,
            # instead of copying the conv's output into three again.
            widths = [self.d_inner, self.d_inner, groups_width, groups_width, self.nheads]
            z, x, B, C, dt = torch.split(zxbcdt, widths, dim=-1)
            x = self._causal_conv_graph(x, 0, self.d_inner)
            B = self._causal_conv_graph(B, self.d_inner, groups_width)
            C = self._causal_conv_graph(C, self.d_inner + groups_width, groups_width)
        else:
            z, xbc, dt = torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)
            xbc = self._causal_conv(xbc)
            x, B, C = torch.split(xbc, [self.d_inner, groups_width, groups_width], dim=-1)
        y = self._ssm(x, dt, B, C)
        # Gate and norm in the scan's precision; back to the projection's dtype for out_proj.
        return self.norm(y, z.to(y.dtype)).to(z.dtype)

    def _causal_conv(self, xbc: Tensor) -> Tensor:
        """Depthwise causal conv with `conv1d`'s weights, then SiLU.

        Written as d_conv shifted multiply-adds in the (B, L, C) layout: the same result as
        `conv1d` over a left-padded input, without its two transposes (measured: the conv and
        its copies took ~20% of the layer on the CPU).

        Shape: (B, L, conv_dim) -> (B, L, conv_dim).
        """
        length = xbc.shape[1]
        # (d_conv, conv_dim), each tap's row contiguous: tap k sees x[t - (d_conv-1-k)]. Under
        # torch.compile a strided tap (the weight's own layout, or a .contiguous() copy, which
        # inductor fuses away) keeps the conv's kernels scalar; a stack is a real small copy
        # (measured: conv fwd+bwd at base's shape 30.6 -> 16.2 ms compiled, eager unchanged).
        taps = torch.stack(self.conv1d.weight[:, 0, :].unbind(1))
        padded = F.pad(xbc, (0, 0, self.d_conv - 1, 0))
        out = torch.addcmul(self.conv1d.bias, padded[:, self.d_conv - 1 :], taps[-1])
        for k in range(self.d_conv - 1):  # a loop over the taps, not over time
            out = torch.addcmul(out, padded[:, k : k + length], taps[k])
        return F.silu(out)

    def _causal_conv_graph(self, part: Tensor, first: int, channels: int) -> Tensor:
        """`_causal_conv` of the conv's channels first .. first + channels, as recorded for
        export: one depthwise Conv2d over (B, channels, 1, L).

        In onnxruntime the shifted multiply-adds are a Pad, then a Slice, Mul and Add per tap,
        each a full pass over the activations. A 2-D Conv whose input and output permutes sit
        right beside it is rewritten by onnxruntime's NCHWc pass into one blocked depthwise
        conv with the permutes folded into its layout reorders (channels-last). Measured: base's
        conv at 10 s on 1 thread 17.4 ms -> 7.6 ms. Same weights, same result to rounding.

        Shape: (B, L, channels) -> (B, L, channels).
        """
        length = part.shape[1]
        weight = self.conv1d.weight[first : first + channels].unsqueeze(2)  # (C, 1, 1, d_conv)
        bias = self.conv1d.bias[first : first + channels]
        image = part.unsqueeze(1).permute(0, 3, 1, 2)  # (B, C, 1, L)
        pad = self.d_conv - 1  # both sides (Conv2d pads symmetrically); the right end is cut
        out = F.conv2d(image, weight, bias, padding=(0, pad), groups=channels)
        return F.silu(out.permute(0, 2, 3, 1).flatten(1, 2)[:, :length])

    def _ssm(self, x: Tensor, dt: Tensor, B: Tensor, C: Tensor) -> Tensor:
        """Selective state space: softplus(dt + dt_bias), A = -exp(A_log), scan, plus D·x.

        Runs in float32 (or float64) with autocast off, whatever the caller's precision.

        Shape: x (B, L, d_inner), dt (B, L, nheads), B and C (B, L, ngroups·d_state)
        -> (B, L, d_inner).
        """
        dtype = _scan_dtype(x.dtype)
        # sizes read from the tensor (not unflatten) so that ONNX traces keep B and L dynamic
        batch, length = x.shape[0], x.shape[1]
        heads = (batch, length, self.nheads, self.headdim)
        groups = (batch, length, self.ngroups, self.d_state)
        with autocast_off(x.device):
            x = x.to(dtype).reshape(heads)
            dt = F.softplus(dt.to(dtype) + self.dt_bias.to(dtype))
            A = -torch.exp(self.A_log.to(dtype))
            B, C = B.to(dtype).reshape(groups), C.to(dtype).reshape(groups)
            y = ssd_scan(x, dt, A, B, C, chunk_size=self.chunk_size)
            y = y + x * self.D.to(dtype).unsqueeze(-1)
        return y.reshape(batch, length, self.d_inner)

    def initial_state(
        self, batch: int, dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        """The states of `step` before the first step: zeros, on the parameters' device.

        Shapes: conv (batch, d_conv - 1, conv_dim): the last inputs of the causal conv, oldest
        first; ssm (batch, nheads, headdim, d_state): the scan's state S.
        """
        device = self.in_proj.weight.device
        conv = torch.zeros(batch, self.d_conv - 1, self.conv_dim, dtype=dtype, device=device)
        ssm = torch.zeros(batch, self.nheads, self.headdim, self.d_state, dtype=dtype)
        return conv, ssm.to(device)

    def step(
        self, u: Tensor, conv_state: Tensor, ssm_state: Tensor, lead: tuple[int, ...] = ()
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One time step of `forward`, carrying its history in two states (streaming).

        Feeding a sequence step by step from `initial_state` gives `forward`'s output on it, to
        rounding: the same projections, the causal conv over the kept inputs, and the scan's
        recurrence S_t = exp(dt_t A) S_{t-1} + dt_t x_t ⊗ B_t, y_t = S_t · C_t + D x_t.

        Shape: u (batch, *lead, d_model), states as `initial_state` with the same leading
        dimensions -> (y (batch, *lead, d_model), conv, ssm). `lead` (constant sizes, e.g. the
        bands) lets a caller keep its layout: a state reshaped on every step is a copy.
        """
        # Sizes are constants or -1 (no shape reads), which keeps the streaming graph lean.
        z, xbc, dt = torch.split(self.in_proj(u), [self.d_inner, self.conv_dim, self.nheads], -1)
        time_axis = len(lead) + 1
        window = torch.cat([conv_state, xbc.unsqueeze(time_axis)], dim=time_axis)
        taps = self.conv1d.weight[:, 0, :].t()  # (d_conv, conv_dim), oldest tap first
        xbc = F.silu((window * taps).sum(time_axis) + self.conv1d.bias)
        groups_width = self.ngroups * self.d_state
        x, B, C = torch.split(xbc, [self.d_inner, groups_width, groups_width], dim=-1)
        dtype = _scan_dtype(x.dtype)
        # A group's heads share B and C, so its heads' rows stack into one matrix of
        # (heads per group * headdim) rows: the outer product and the read-out are then one
        # small matmul per group (measured faster in onnxruntime than broadcasting over heads).
        grouped = (-1, *lead, self.ngroups, self.d_inner // self.ngroups)
        heads = (-1, *lead, self.nheads, self.headdim, 1)
        per_head = (self.nheads, 1, 1)  # per-head parameters over (headdim, 1)
        with autocast_off(u.device):
            x = x.to(dtype).reshape(heads)
            dt = dt.to(dtype).reshape(-1, *lead, self.nheads, 1, 1)
            dt = F.softplus(dt + self.dt_bias.to(dtype).reshape(per_head))
            decay = torch.exp(dt * -torch.exp(self.A_log.to(dtype)).reshape(per_head))
            B = B.to(dtype).reshape(-1, *lead, self.ngroups, 1, self.d_state)
            C = C.to(dtype).reshape(-1, *lead, self.ngroups, self.d_state, 1)
            update = (dt * x).reshape(*grouped, 1) @ B  # (..., groups, rows, d_state)
            state_shape = (-1, *lead, self.nheads, self.headdim, self.d_state)
            ssm_state = ssm_state * decay + update.reshape(state_shape)
            read = ssm_state.reshape(*grouped, self.d_state) @ C  # (..., groups, rows, 1)
            y = read.reshape(heads) + x * self.D.to(dtype).reshape(per_head)
        y = self.norm(y.reshape(-1, *lead, self.d_inner), z.to(y.dtype)).to(z.dtype)
        return self.out_proj(y), window.narrow(time_axis, 1, self.d_conv - 1), ssm_state

    def _fused_forward(self, u: Tensor) -> Tensor:
        """The whole layer after in_proj in mamba_ssm's fused kernel, on this module's parameters.

        The call mirrors what mamba_ssm 2.x's own Mamba2 passes on its memory-efficient path
        (`mamba_split_conv1d_scan_combined`, keyword names from its signature). Only exercised
        on a CUDA machine with mamba_ssm installed; CPU tests cover the switch, not this call.

        in_proj's output is widened by `fused_padding` zero channels (see `fused_padding`), so
        the kernel's strides are aligned whatever the preset; the result is unchanged.

        Shape: u (B, L, d_model) -> (B, L, d_model).
        """
        kernel, _ = _import_fused_kernel()
        assert kernel is not None  # resolve_kernel chose this path only if it imported
        pad = self.fused_padding or 0
        in_weight, out_weight = self.in_proj.weight, self.out_proj.weight
        if pad:
            in_weight = torch.cat([in_weight.new_zeros(pad, self.d_model), in_weight])
            out_weight = torch.cat([out_weight.new_zeros(self.d_model, pad // 2), out_weight], 1)
        return kernel(
            F.linear(u, in_weight),
            self.conv1d.weight.squeeze(1),  # (conv_dim, 1, d_conv) -> (conv_dim, d_conv)
            self.conv1d.bias,
            self.dt_bias,
            -torch.exp(self.A_log.float()),
            D=self.D,
            chunk_size=FUSED_CHUNK_SIZE,
            seq_idx=None,
            activation="silu",
            rmsnorm_weight=self.norm.weight,
            rmsnorm_eps=self.norm.eps,
            outproj_weight=out_weight,
            outproj_bias=None,
            headdim=self.headdim,
            ngroups=self.ngroups,
            norm_before_gate=False,
        )
