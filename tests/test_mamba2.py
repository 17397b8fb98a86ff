"""Mamba2 layer: mamba_ssm's state-dict contract, forward semantics, causality, kernel switch."""

from __future__ import annotations

import io
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from mbsnet.models import PRESETS, mamba2
from mbsnet.models.mamba2 import KERNEL_ENV, Mamba2, resolve_kernel
from mbsnet.models.mbsnet import MBSNet
from mbsnet.models.ssd import ssd_reference

CONFIGS = [
    dict(d_model=16, d_state=8, d_conv=4, expand=2, headdim=8, ngroups=1),
    dict(d_model=24, d_state=4, d_conv=3, expand=2, headdim=12, ngroups=2),
    dict(d_model=64, d_state=16, d_conv=4, expand=2, headdim=16, ngroups=1),
]


def expected_shapes(d_model, d_state, d_conv, expand, headdim, ngroups) -> dict[str, tuple]:
    """The state dict of mamba_ssm.Mamba2 (rmsnorm, no biases), from its size formulas."""
    d_inner = expand * d_model
    nheads = d_inner // headdim
    conv_dim = d_inner + 2 * ngroups * d_state
    d_in_proj = 2 * d_inner + 2 * ngroups * d_state + nheads
    return {
        "in_proj.weight": (d_in_proj, d_model),
        "conv1d.weight": (conv_dim, 1, d_conv),
        "conv1d.bias": (conv_dim,),
        "dt_bias": (nheads,),
        "A_log": (nheads,),
        "D": (nheads,),
        "norm.weight": (d_inner,),
        "out_proj.weight": (d_model, d_inner),
    }


@pytest.fixture
def torch_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KERNEL_ENV, "torch")


@pytest.mark.parametrize("config", CONFIGS)
def test_state_dict_contract(config: dict) -> None:
    model = Mamba2(**config)
    got = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert got == expected_shapes(**config)
    assert [name for name, _ in model.named_buffers()] == []
    for name in ("dt_bias", "A_log", "D"):
        assert getattr(model, name)._no_weight_decay is True


def test_init_ranges() -> None:
    model = Mamba2(64, headdim=4, dt_min=1e-3, dt_max=0.1)  # 32 heads
    dt = F.softplus(model.dt_bias.detach())
    assert (dt >= 1e-3 * 0.999).all() and (dt <= 0.1 * 1.001).all()
    A = torch.exp(model.A_log.detach())
    assert (A >= 1.0).all() and (A <= 16.0).all()
    assert torch.equal(model.D.detach(), torch.ones(32))
    floored = F.softplus(Mamba2(8, headdim=4, dt_min=1e-6, dt_max=1e-5).dt_bias.detach())
    torch.testing.assert_close(floored, torch.full_like(floored, 1e-4))


def test_invalid_sizes_rejected() -> None:
    with pytest.raises(ValueError, match="headdim"):
        Mamba2(10, headdim=8)
    with pytest.raises(ValueError, match="ngroups"):
        Mamba2(16, headdim=8, ngroups=3)


@pytest.mark.parametrize("length", [1, 5, 64, 129])
def test_output_shape(length: int, torch_kernel: None) -> None:
    model = Mamba2(16, d_state=8, headdim=8, chunk_size=16)
    out = model(torch.randn(3, length, 16))
    assert out.shape == (3, length, 16)
    assert torch.isfinite(out).all()


def reference_layer(model: Mamba2, u: torch.Tensor) -> torch.Tensor:
    """The layer written out step by step from its spec, on the recurrence (float64)."""
    m = model
    zxbcdt = u @ m.in_proj.weight.T
    z, xbc, dt = zxbcdt.split([m.d_inner, m.conv_dim, m.nheads], dim=-1)
    padded = F.pad(xbc.transpose(1, 2), (m.d_conv - 1, 0))  # causal: look back d_conv-1 steps
    xbc = F.silu(F.conv1d(padded, m.conv1d.weight, m.conv1d.bias, groups=m.conv_dim))
    width = m.ngroups * m.d_state
    x, B, C = xbc.transpose(1, 2).split([m.d_inner, width, width], dim=-1)
    b, length = u.shape[:2]
    x = x.reshape(b, length, m.nheads, m.headdim)
    B = B.reshape(b, length, m.ngroups, m.d_state)
    C = C.reshape(b, length, m.ngroups, m.d_state)
    dt = F.softplus(dt + m.dt_bias)
    y = ssd_reference(x, dt, -torch.exp(m.A_log), B, C) + m.D[:, None] * x
    y = (y.reshape(b, length, m.d_inner) * F.silu(z)).reshape(b, length, m.ngroups, -1)
    y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5)
    return (y.reshape(b, length, m.d_inner) * m.norm.weight) @ m.out_proj.weight.T


@pytest.mark.parametrize("config", CONFIGS[:2])
def test_forward_matches_spec(config: dict, torch_kernel: None) -> None:
    model = Mamba2(**config, chunk_size=8).double()
    u = torch.randn(2, 21, config["d_model"], dtype=torch.float64)
    torch.testing.assert_close(model(u), reference_layer(model, u))


@pytest.mark.parametrize("config", CONFIGS[:2])
def test_traced_layer_records_the_same_conv(config: dict, torch_kernel: None) -> None:
    """Under tracing (ONNX export) the causal conv is recorded as depthwise Conv2d's (one each
    for x, B and C); the traced layer equals the eager one at lengths other than the traced
    example's."""
    model = Mamba2(**config, chunk_size=8).double().eval()
    xbc = torch.randn(2, 13, model.conv_dim, dtype=torch.float64)
    conv_graph = model._causal_conv_graph(xbc, 0, model.conv_dim)
    torch.testing.assert_close(conv_graph, model._causal_conv(xbc))
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.randn(1, 21, config["d_model"], dtype=torch.float64))
        for batch, length in ((2, 37), (1, 5)):
            u = torch.randn(batch, length, config["d_model"], dtype=torch.float64)
            torch.testing.assert_close(traced(u), model(u))


def test_causal(torch_kernel: None) -> None:
    model = Mamba2(16, d_state=8, headdim=8, chunk_size=8)
    u = torch.randn(2, 40, 16)
    changed = u.clone()
    changed[:, 19:] = torch.randn(2, 21, 16)
    out, out_changed = model(u), model(changed)
    torch.testing.assert_close(out[:, :19], out_changed[:, :19], atol=1e-6, rtol=0)
    assert not torch.allclose(out[:, 19:], out_changed[:, 19:])


def test_gradient_reaches_every_parameter(torch_kernel: None) -> None:
    model = Mamba2(16, d_state=8, headdim=8, ngroups=2, chunk_size=8)
    model(torch.randn(2, 30, 16)).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_autocast_bf16_close_to_float32(torch_kernel: None) -> None:
    model = Mamba2(16, d_state=8, headdim=8, chunk_size=8)
    u = torch.randn(2, 50, 16)
    want = model(u)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(u)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=0.05, rtol=0.05)


# --- kernel switch (no CUDA needed: the device is only inspected, and the import is faked) ---


def fake_import(ok: bool):
    """A stand-in for mamba2._import_fused_kernel that succeeds or fails."""
    return lambda: (object(), "") if ok else (None, "ModuleNotFoundError: No module 'mamba_ssm'")


@pytest.mark.parametrize("setting", ["auto", "torch", "mamba_ssm"])
@pytest.mark.parametrize("imports", [True, False])
def test_cpu_always_uses_torch(setting, imports, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KERNEL_ENV, setting)
    monkeypatch.setattr(mamba2, "_import_fused_kernel", fake_import(imports))
    assert resolve_kernel(torch.device("cpu")) == "torch"
    assert resolve_kernel("cpu") == "torch"


@pytest.mark.parametrize(
    ("setting", "imports", "expected"),
    [
        ("auto", True, "mamba_ssm"),
        ("auto", False, "torch"),
        ("torch", True, "torch"),
        ("torch", False, "torch"),
        ("mamba_ssm", True, "mamba_ssm"),
    ],
)
def test_cuda_switch(setting, imports, expected, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KERNEL_ENV, setting)
    monkeypatch.setattr(mamba2, "_import_fused_kernel", fake_import(imports))
    assert resolve_kernel(torch.device("cuda", 0)) == expected


def test_cuda_forced_kernel_missing_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KERNEL_ENV, "mamba_ssm")
    monkeypatch.setattr(mamba2, "_import_fused_kernel", fake_import(False))
    with pytest.raises(RuntimeError, match=f"pip install mamba-ssm.*{KERNEL_ENV}=torch"):
        resolve_kernel("cuda")


def test_default_is_auto_and_unknown_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    monkeypatch.setattr(mamba2, "_import_fused_kernel", fake_import(True))
    assert resolve_kernel("cuda") == "mamba_ssm"
    monkeypatch.setenv(KERNEL_ENV, "triton")
    with pytest.raises(ValueError, match=KERNEL_ENV):
        resolve_kernel("cpu")


def test_forced_kernel_on_cpu_runs_torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KERNEL_ENV, "mamba_ssm")
    monkeypatch.setattr(mamba2, "_import_fused_kernel", fake_import(False))
    assert Mamba2(16, d_state=8, headdim=8)(torch.randn(1, 7, 16)).shape == (1, 7, 16)


def test_import_does_not_load_mamba_ssm() -> None:
    assert "mamba_ssm" not in sys.modules


def fake_fused_kernel(
    zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, *, seq_idx, activation,
    rmsnorm_weight, rmsnorm_eps, outproj_weight, outproj_bias, headdim, ngroups, norm_before_gate,
):  # fmt: skip
    """mamba_split_conv1d_scan_combined's documented semantics, written on the recurrence.

    Like the real kernel, it reads 2·d_nonssm leading channels as a SwiGLU branch whose output
    goes through out_proj before the SSM's, and it refuses the strides that causal-conv1d's
    channel-last path refuses (row stride of zxbcdt, and the conv width, off a multiple of 8).
    """
    assert seq_idx is None and activation == "silu" and outproj_bias is None
    assert not norm_before_gate and conv1d_weight.dim() == 2
    assert zxbcdt.stride(1) % mamba2.FUSED_WIDTH_MULTIPLE == 0, "x.stride(2) not a multiple of 8"
    assert conv1d_weight.shape[0] % mamba2.FUSED_WIDTH_MULTIPLE == 0, "dxBC stride"
    nheads = D.shape[0]
    dim = nheads * headdim
    dstate = (conv1d_weight.shape[0] - dim) // ngroups // 2
    d_nonssm = (zxbcdt.shape[-1] - 2 * dim - 2 * ngroups * dstate - nheads) // 2
    zx0, z, xbc, dt = zxbcdt.split(
        [2 * d_nonssm, dim, dim + 2 * ngroups * dstate, nheads], dim=-1
    )
    width = conv1d_weight.shape[1]
    padded = F.pad(xbc.transpose(1, 2), (width - 1, 0))
    xbc = F.silu(F.conv1d(padded, conv1d_weight[:, None], conv1d_bias, groups=xbc.shape[-1]))
    x, B, C = xbc.transpose(1, 2).split([dim, ngroups * dstate, ngroups * dstate], dim=-1)
    b, length = zxbcdt.shape[:2]
    x = x.reshape(b, length, nheads, headdim)
    dt = F.softplus(dt + dt_bias)
    B, C = B.reshape(b, length, ngroups, dstate), C.reshape(b, length, ngroups, dstate)
    y = (ssd_reference(x, dt, A, B, C) + D[:, None] * x).reshape(b, length, dim) * F.silu(z)
    y = y.reshape(b, length, ngroups, -1)
    y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + rmsnorm_eps)
    z0, x0 = zx0.chunk(2, dim=-1)
    out = torch.cat([F.silu(z0) * x0, y.reshape(b, length, dim) * rmsnorm_weight], dim=-1)
    return out @ outproj_weight.T


@pytest.mark.parametrize(
    "width", [dict(d_model=24, d_state=4, headdim=12, ngroups=2), dict(d_model=32, headdim=16)]
)
def test_fused_call_argument_mapping_against_a_stand_in_kernel_written_here(
    monkeypatch: pytest.MonkeyPatch, width: dict
) -> None:
    """Only the mapping of this module's parameters onto mamba_ssm's call signature (with the
    zero channels that align its strides) is checked, against a stand-in written here from the
    kernel's documented semantics; the real fused kernel runs only on a CUDA machine with
    mamba_ssm (not in CI). The second width is tiny's (in_proj 98, padded to 104)."""
    model = Mamba2(**width, d_conv=3, expand=1, chunk_size=8).double()
    assert model.fused_padding is not None
    u = torch.randn(2, 19, model.d_model, dtype=torch.float64, requires_grad=True)
    monkeypatch.setenv(KERNEL_ENV, "torch")
    want = model(u)
    (want_grad,) = torch.autograd.grad(want.square().sum(), model.in_proj.weight)
    monkeypatch.setattr(mamba2, "resolve_kernel", lambda device: "mamba_ssm")
    monkeypatch.setattr(mamba2, "_import_fused_kernel", lambda: (fake_fused_kernel, ""))
    got = model(u)
    torch.testing.assert_close(got, want)
    (got_grad,) = torch.autograd.grad(got.square().sum(), model.in_proj.weight)
    torch.testing.assert_close(got_grad, want_grad)


def test_every_preset_aligns_for_the_fused_kernel() -> None:
    for name, config in PRESETS.items():
        layer = MBSNet(config).encoder[0].time_forward
        pad = layer.fused_padding
        assert pad is not None, name
        assert (layer.in_proj.out_features + pad) % mamba2.FUSED_WIDTH_MULTIPLE == 0, name


def test_unalignable_width_is_refused_when_the_fused_kernel_is_forced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = Mamba2(32, d_state=16, expand=1, headdim=32)  # one head: in_proj 97, odd
    assert model.fused_padding is None
    monkeypatch.setattr(mamba2, "resolve_kernel", lambda device: "mamba_ssm")
    monkeypatch.setattr(mamba2, "_import_fused_kernel", lambda: (fake_fused_kernel, ""))
    monkeypatch.setenv(KERNEL_ENV, "mamba_ssm")
    with pytest.raises(RuntimeError, match="cannot be aligned"):
        model(torch.randn(1, 5, 32))
    monkeypatch.setenv(KERNEL_ENV, "auto")
    with pytest.warns(UserWarning, match="PyTorch path"):
        assert model(torch.randn(1, 5, 32)).shape == (1, 5, 32)


def test_onnx_export_dynamic_batch_and_time(torch_kernel: None) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = Mamba2(16, d_state=8, headdim=8, ngroups=2, chunk_size=8).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices
        torch.onnx.export(
            model, (torch.randn(2, 11, 16),), buffer, dynamo=False, input_names=["u"],
            output_names=["y"], dynamic_axes={"u": {0: "b", 1: "l"}, "y": {0: "b", 1: "l"}},
            opset_version=17,
        )  # fmt: skip
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for batch, length in ((1, 1), (3, 50)):
        u = torch.randn(batch, length, 16)
        (got,) = session.run(None, {"u": u.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), model(u), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config", CONFIGS)
def test_step_by_step_equals_forward(config: dict) -> None:
    model = Mamba2(**config, chunk_size=8).double()
    u = torch.randn(3, 21, config["d_model"], dtype=torch.float64)
    conv, ssm = model.initial_state(3, torch.float64)
    steps = []
    for t in range(u.shape[1]):
        y, conv, ssm = model.step(u[:, t], conv, ssm)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), model(u), atol=1e-12, rtol=1e-10)
