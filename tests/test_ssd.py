"""The chunked SSD scan against the step-by-step recurrence: values, gradients, causality, ONNX."""

from __future__ import annotations

import io
import random
import warnings

import pytest
import torch
import torch.nn.functional as F

from mbsnet.models.ssd import segsum, ssd_reference, ssd_scan

CHUNKS = (4, 8, 16, 32, 64)
_rng = random.Random(1234)
# (length, chunk, ngroups): every length with two seeded random chunk sizes, plus ngroups=2.
CASES = [
    (length, chunk, 1) for length in (1, 2, 17, 63, 64, 65, 500) for chunk in _rng.sample(CHUNKS, 2)
]
CASES += [(length, _rng.choice(CHUNKS), 2) for length in (1, 17, 65, 130)]


def make_inputs(
    length: int,
    *,
    batch: int = 2,
    heads: int = 4,
    headdim: int = 3,
    ngroups: int = 1,
    dstate: int = 5,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> list[torch.Tensor]:
    """Random x, dt (> 0), A (< 0, in [-16, -1] like Mamba-2's init), B, C with grads enabled."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, heads, headdim, generator=gen, dtype=dtype)
    dt = F.softplus(torch.randn(batch, length, heads, generator=gen, dtype=dtype) - 1.0)
    A = -(1.0 + 15.0 * torch.rand(heads, generator=gen, dtype=dtype))
    B = torch.randn(batch, length, ngroups, dstate, generator=gen, dtype=dtype)
    C = torch.randn(batch, length, ngroups, dstate, generator=gen, dtype=dtype)
    return [t.requires_grad_() for t in (x, dt, A, B, C)]


def values_and_grads(fn, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """[y, dL/dx, dL/ddt, dL/dA, dL/dB, dL/dC] for L = <y, w> with a fixed random w."""
    y = fn(*inputs)
    gen = torch.Generator().manual_seed(7)
    weight = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.dtype)
    grads = torch.autograd.grad((y * weight).sum(), inputs)
    return [y.detach(), *grads]


@pytest.mark.parametrize(("length", "chunk", "ngroups"), CASES)
def test_chunked_matches_recurrence(length: int, chunk: int, ngroups: int) -> None:
    inputs = make_inputs(length, ngroups=ngroups)
    got = values_and_grads(lambda *t: ssd_scan(*t, chunk_size=chunk), inputs)
    want = values_and_grads(ssd_reference, inputs)
    for name, g, w in zip(["y", "dx", "ddt", "dA", "dB", "dC"], got, want, strict=True):
        assert g.shape == w.shape, name
        # float64 agrees to ~1e-14; 1e-9 leaves room without hiding a real error
        torch.testing.assert_close(g, w, atol=1e-9, rtol=1e-9, msg=f"{name} (l={length})")


@pytest.mark.parametrize(("length", "chunk"), [(700, 4), (1030, 8)])
def test_long_range_carry_across_blocks(length: int, chunk: int) -> None:
    # Weak decay (dt·A ~ -0.005 per step) so states from hundreds of steps back still matter:
    # 175 and 129 chunks span several carry blocks, neither a multiple of the block size.
    x, dt, A, B, C = make_inputs(length, heads=2, seed=3)
    with torch.no_grad():
        dt.mul_(0.002)
    inputs = [x, dt, A, B, C]
    got = values_and_grads(lambda *t: ssd_scan(*t, chunk_size=chunk), inputs)
    want = values_and_grads(ssd_reference, inputs)
    # The last outputs really depend on inputs more than 300 steps back.
    with torch.no_grad():
        cut = x.detach().clone()
        cut[:, : length - 300] = 0  # keep only the last 300 steps (several carry blocks)
        moved = ssd_reference(cut, dt, A, B, C)[:, -1] - want[0][:, -1]
    assert moved.abs().max() > 0.1 * want[0][:, -1].abs().max()
    for name, g, w in zip(["y", "dx", "ddt", "dA", "dB", "dC"], got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-9, rtol=1e-9, msg=f"{name} (l={length})")


def test_float32_close_to_float64() -> None:
    inputs64 = make_inputs(300, ngroups=2)
    inputs32 = [t.detach().float().requires_grad_() for t in inputs64]
    got = values_and_grads(lambda *t: ssd_scan(*t, chunk_size=32), inputs32)
    want = values_and_grads(lambda *t: ssd_scan(*t, chunk_size=32), inputs64)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g.double(), w, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("chunk", [4, 16, 64])
def test_prefix_is_causal(chunk: int) -> None:
    """The output for a prefix is the prefix of the output, whatever the padding."""
    inputs = [t.detach() for t in make_inputs(90, ngroups=2)]
    full = ssd_scan(*inputs, chunk_size=chunk)
    for cut in (1, chunk - 1, chunk, chunk + 1, 77):
        part = [t if t.dim() == 1 else t[:, :cut] for t in inputs]
        torch.testing.assert_close(ssd_scan(*part, chunk_size=chunk), full[:, :cut])


def test_chunk_size_does_not_change_result() -> None:
    inputs = [t.detach() for t in make_inputs(100)]
    ys = [ssd_scan(*inputs, chunk_size=q) for q in CHUNKS]
    for y in ys[1:]:
        torch.testing.assert_close(y, ys[0])


def test_strong_decay_stays_finite() -> None:
    """Large dt·|A| over long spans underflows to 0, never to inf - inf (NaN), also in grads."""
    x, dt, A, B, C = make_inputs(256, dtype=torch.float32)
    dt = (dt.detach() * 20).requires_grad_()
    y, *grads = values_and_grads(lambda *t: ssd_scan(*t, chunk_size=64), [x, dt, A, B, C])
    for t in (y, *grads):
        assert torch.isfinite(t).all()


def test_segsum_definition() -> None:
    a = torch.randn(3, 6, dtype=torch.float64)
    out = segsum(a)
    for i in range(6):
        for j in range(6):
            want = a[:, j + 1 : i + 1].sum(-1) if i >= j else torch.full((3,), float("-inf"))
            torch.testing.assert_close(out[:, i, j], want.double())


def test_bad_groups_rejected() -> None:
    x, dt, A, _, _ = make_inputs(8, heads=4)
    B = C = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="divisible"):
        ssd_scan(x, dt, A, B, C)


def test_onnx_dynamic_time_axis() -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")

    class Scan(torch.nn.Module):
        def forward(self, x, dt, A, B, C):
            return ssd_scan(x, dt, A, B, C, chunk_size=8)

    names = ["x", "dt", "A", "B", "C"]
    dynamic = {k: {0: "batch", 1: "time"} for k in ("x", "dt", "B", "C", "y")}
    example = [t.detach().float() for t in make_inputs(13, ngroups=2)]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices
        torch.onnx.export(
            Scan(), tuple(example), buffer, dynamo=False, input_names=names,
            output_names=["y"], dynamic_axes=dynamic, opset_version=17,
        )  # fmt: skip
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for batch, length in ((1, 1), (2, 8), (3, 37)):
        inputs = [t.detach().float() for t in make_inputs(length, batch=batch, ngroups=2)]
        (got,) = session.run(None, {k: t.numpy() for k, t in zip(names, inputs, strict=True)})
        want = ssd_scan(*inputs, chunk_size=8)
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=1e-5)
