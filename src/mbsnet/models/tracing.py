"""One test for "a graph is being recorded", shared by every module that must behave then."""

from __future__ import annotations

import torch


def is_exporting() -> bool:
    """True while a graph is recorded rather than run eagerly.

    `torch.jit.is_tracing()` covers the TorchScript tracer (the legacy ONNX exporter) only; under
    the dynamo exporter (torch.export) it is False, and `torch.compiler.is_compiling()` is the
    test that holds there. Eager-only work (input checks that raise, kernel imports,
    activation checkpointing) is skipped while this is True.
    """
    return (
        torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_compiling()
    )
