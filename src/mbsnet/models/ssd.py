"""Mamba-2 SSD (state-space duality) scan: the chunked matmul form, in plain PyTorch.

Per head, with a state S of shape (p, n) starting at zero, the scan computes

    S_t = exp(dt_t * A) * S_{t-1} + (dt_t * x_t) ⊗ B_t,        y_t = S_t · C_t,

where B and C are shared by the heads of a group. `ssd_scan` evaluates this without a loop over
time: the sequence is cut into chunks of q steps, the inside of each chunk is an attention-like
masked (q × q) matmul, and chunk-end states are carried across chunks by decay matmuls in two
levels (within blocks of chunks, then across blocks), so the cost stays linear in length.
`ssd_reference` is the plain recurrence, kept as the documented ground truth.

Notation: b batch, l length, h heads, p head dim, g groups, r = h/g heads per group, n state dim,
q chunk size, c number of chunks. Inside `ssd_scan` time is laid out as (b, c, q, g, r, ·), which
is the input's own memory order (a free view); only the per-head (q × q) products use the
head-major order (b, c, g, r, q, ·). The state matmuls fold the r heads of a group into one
wide (q × r·p) operand, which keeps B and C unreplicated and the matrices large enough for BLAS.

Everything runs in the input dtype; callers that train in reduced precision upcast first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Chunk size changes speed only (results agree to rounding). Measured on the CPU (fwd+bwd of one
# Mamba2 layer, 2 threads, 124 sequences x 251 frames, headdim 32, d_state 16, as in base):
# chunks of 16 and 32 are within 5% of each other and 64 is 20-25% slower; the per-head (q x q)
# work grows with q while the number of chunk states shrinks with it.
DEFAULT_CHUNK_SIZE = 16

CARRY_BLOCK = 16
"""Chunks per block in the two-level carry of states across chunks (see `_carry_states`)."""


def segsum(a: Tensor) -> Tensor:
    """Segment sums out[..., i, j] = a[..., j+1] + ... + a[..., i]; 0 on the diagonal, -inf above.

    exp(segsum(a)) is the lower-triangular transfer matrix of a recurrence with log-decays a.
    Each entry is a masked cumsum of just the terms it spans, not a difference of two long prefix
    sums, which would cancel catastrophically once the prefix sums grow large.

    Shape: a (..., T) -> (..., T, T).
    """
    steps = a.shape[-1]
    idx = torch.arange(steps, device=a.device)
    below = idx.unsqueeze(-1) > idx  # (T, T): row i > column j
    sums = torch.where(below, a.unsqueeze(-1), 0.0).cumsum(-2)
    return sums.masked_fill(idx.unsqueeze(-1) < idx, float("-inf"))


def _chunk_decay(prefix: Tensor) -> Tensor:
    """Within-chunk transfer matrix exp(a_{j+1} + ... + a_i) for i >= j, 0 above the diagonal,
    from the chunk's prefix sums of log-decays (a_1 + ... + a_i).

    A difference of prefix sums is exact enough over one chunk (q steps) and costs one cumsum
    of length q instead of `segsum`'s cumsum over a (q, q) expansion.

    Shape: prefix (..., q) -> (..., q, q).
    """
    steps = prefix.shape[-1]
    idx = torch.arange(steps, device=prefix.device)
    diff = prefix.unsqueeze(-1) - prefix.unsqueeze(-2)
    return torch.exp(diff.masked_fill(idx.unsqueeze(-1) < idx, float("-inf")))


def _pad_time(t: Tensor, pad: int | Tensor) -> Tensor:
    """Zero-pad dim 1 (time) at the end. Shape: (b, l, ...) -> (b, l + pad, ...)."""
    return F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))


def _intra_chunk(decay: Tensor, cb: Tensor, dt_hm: Tensor, x: Tensor) -> Tensor:
    """Outputs from inputs of the same chunk: (decay ∘ C·Bᵀ ∘ dt_j) @ x, per head.

    Shape: decay (b, c, g, r, q, q), cb (b, c, g, q, q), dt_hm (b, c, g, r, q),
    x (b, c, q, g, r, p) -> (b, c, g, r, q, p).
    """
    # dt_j scales column j (the input step), so it folds into the q × q matrix instead of x.
    mixer = decay * (cb.unsqueeze(3) * dt_hm.unsqueeze(-2))
    return mixer @ x.permute(0, 1, 3, 4, 2, 5)


def _chunk_states(decay: Tensor, dt_hm: Tensor, x: Tensor, Bc: Tensor) -> Tensor:
    """State each chunk leaves behind on its own (as if it started from zero).

    The weight of step j is dt_j times its decay to the chunk's last step, which is the last row
    of the intra-chunk decay matrix. Heads of a group share B, so they are folded into one
    (n × q) @ (q × r·p) matmul.

    Shape: decay (b, c, g, r, q, q), dt_hm (b, c, g, r, q), x (b, c, q, g, r, p),
    Bc (b, c, g, q, n) -> (b, c, g, n, r·p).
    """
    b, c, q, g, r, p = x.shape
    weight = (decay[..., -1, :] * dt_hm).permute(0, 1, 4, 2, 3)  # (b, c, q, g, r)
    xw = (x * weight.unsqueeze(-1)).transpose(2, 3).reshape(b, c, g, q, r * p)
    return Bc.transpose(-1, -2) @ xw


def _carry_from_zero(log_decay: Tensor, values: Tensor) -> Tensor:
    """Exclusive scan of v_i with decays a_i, from a zero start, as one transfer matmul.

    out_i = sum_{j < i} exp(a_{j+1} + ... + a_{i-1}) v_j. With a zero prepended, entry (i, j) of
    exp(segsum) over the (k+1) padded log-decays is that decay; the initial column and the final
    row are not needed and are sliced off.

    Shape: log_decay (..., k), values (..., k, m) -> (..., k, m).
    """
    transfer = torch.exp(segsum(F.pad(log_decay, (1, 0))))[..., :-1, 1:]
    return transfer @ values


def _carry_states(states: Tensor, chunk_log_decay: Tensor) -> Tensor:
    """States entering each chunk, from all earlier chunks' states, in two levels of matmuls.

    One (c × c) transfer matmul over all chunks costs O(c²): quadratic in the signal length
    (at 60 s it dominated the whole layer). Instead chunks are grouped in blocks of
    CARRY_BLOCK: states are carried within each block from zero, block-end states are carried
    across blocks, and each chunk adds its block's incoming state decayed to its start. The graph
    is the same for every length (no shape-dependent branch), so ONNX export stays dynamic; the
    cost is linear up to the (blocks²) top level, which is negligible below tens of minutes.

    Shape: states (b, c, g, n, r·p), chunk_log_decay (b, c, g, r) -> (b, c, g, n, r·p).
    """
    b, c, g, n, rp = states.shape
    r = chunk_log_decay.shape[-1]
    p = rp // r
    k = CARRY_BLOCK
    per_head = states.view(b, c, g, n, r, p).permute(0, 2, 4, 1, 3, 5).reshape(b, g, r, c, n * p)
    log_decay = chunk_log_decay.permute(0, 2, 3, 1)  # (b, g, r, c)
    pad = (-c) % k  # zero state and zero log-decay: trailing padding changes nothing earlier
    per_head = F.pad(per_head, (0, 0, 0, pad)).reshape(b, g, r, -1, k, n * p)
    log_decay = F.pad(log_decay, (0, pad)).reshape(b, g, r, -1, k)

    local = _carry_from_zero(log_decay, per_head)  # entering each chunk, from the block start
    block_out = local[..., -1, :] * torch.exp(log_decay[..., -1:]) + per_head[..., -1, :]
    prefix = log_decay.cumsum(-1)  # its last entry is the block's total (see `ssd_scan`)
    block_in = _carry_from_zero(prefix[..., -1], block_out)  # (b, g, r, blocks, n·p)
    to_chunk = torch.exp(prefix - log_decay)  # block start -> start of chunk i
    carried = local + to_chunk.unsqueeze(-1) * block_in.unsqueeze(-2)
    carried = carried.reshape(b, g, r, -1, n, p)[:, :, :, :c]
    return carried.permute(0, 3, 1, 4, 2, 5).reshape(b, c, g, n, rp)


def _state_outputs(carried: Tensor, Cc: Tensor, cum_log_decay: Tensor) -> Tensor:
    """Outputs from the state entering the chunk: exp(cumsum a)_i · (C_i · S_in).

    Shape: carried (b, c, g, n, r·p), Cc (b, c, g, q, n), cum_log_decay (b, c, g, r, q)
    -> (b, c, g, q, r, p).
    """
    b, c, g, _, rp = carried.shape
    q, r = Cc.shape[-2], cum_log_decay.shape[-2]
    y = (Cc @ carried).view(b, c, g, q, r, rp // r)
    return y * torch.exp(cum_log_decay).transpose(-1, -2).unsqueeze(-1)


def ssd_scan(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Tensor:
    """Chunked SSD scan; same result as `ssd_reference`, no Python loop over time or chunks.

    `dt` must already be positive (softplus'ed) and `A` negative. The D skip and the gate are the
    caller's. Works for any l >= 1: time is zero-padded to a multiple of `chunk_size` (dt = 0 is
    decay 1 and no input, so trailing padding leaves earlier outputs unchanged) and cropped back.

    Shape: x (b, l, h, p), dt (b, l, h), A (h,), B (b, l, g, n), C (b, l, g, n) -> (b, l, h, p),
    with h divisible by g.
    """
    b, length, h, p = x.shape
    g, n = B.shape[-2], B.shape[-1]
    if not torch.jit.is_tracing() and h % g:  # (under tracing, sizes are tensors: skip)
        raise ValueError(f"heads ({h}) must be divisible by ngroups ({g})")
    r = h // g
    q = chunk_size
    pad = (-length) % q  # shape arithmetic only, so tracing keeps the time axis dynamic
    x, dt, B, C = (_pad_time(t, pad) for t in (x, dt, B, C))

    x = x.reshape(b, -1, q, g, r, p)
    dt_hm = dt.reshape(b, -1, q, g, r).permute(0, 1, 3, 4, 2)  # (b, c, g, r, q)
    log_decay = dt_hm * A.to(dt.dtype).view(g, r, 1)
    Bc = B.reshape(b, -1, q, g, n).transpose(2, 3)  # (b, c, g, q, n)
    Cc = C.reshape(b, -1, q, g, n).transpose(2, 3)

    # One prefix sum serves the decay matrix, the state outputs and (its last entry) the chunk
    # totals: a separate .sum(-1) over the strided q axis compiled (torch.compile, CPU) into one
    # OpenMP region per (b, c, g, r) row, ~3 ms per tiny layer.
    prefix = log_decay.cumsum(-1)
    decay = _chunk_decay(prefix)  # (b, c, g, r, q, q)
    cb = Cc @ Bc.transpose(-1, -2)  # once per group, shared by its r heads
    y_diag = _intra_chunk(decay, cb, dt_hm, x)
    states = _chunk_states(decay, dt_hm, x, Bc)
    carried = _carry_states(states, prefix[..., -1])
    y_off = _state_outputs(carried, Cc, prefix)

    y = y_off.transpose(2, 3) + y_diag.permute(0, 1, 4, 2, 3, 5)  # (b, c, q, g, r, p)
    return y.reshape(b, -1, h, p)[:, :length]


def ssd_reference(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """The recurrence itself, one time step at a time (slow; the ground truth for tests).

    S_t = exp(dt_t·A) S_{t-1} + (dt_t x_t) ⊗ B_t, y_t = S_t · C_t, per head, S_0 = 0.

    Shape: x (b, l, h, p), dt (b, l, h), A (h,), B (b, l, g, n), C (b, l, g, n) -> (b, l, h, p).
    """
    b, length, h, p = x.shape
    g, n = B.shape[-2], B.shape[-1]
    B_h = B.repeat_interleave(h // g, dim=2)  # (b, l, h, n): head i uses group i // r
    C_h = C.repeat_interleave(h // g, dim=2)
    state = x.new_zeros(b, h, p, n)
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A).view(b, h, 1, 1)
        update = (dt[:, t, :, None] * x[:, t]).unsqueeze(-1) * B_h[:, t].unsqueeze(-2)
        state = decay * state + update
        ys.append((state * C_h[:, t].unsqueeze(-2)).sum(-1))
    return torch.stack(ys, dim=1)
