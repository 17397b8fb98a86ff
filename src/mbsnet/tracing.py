"""One test for "a graph is being exported", shared by every module that must behave then."""

from __future__ import annotations

import torch


def is_exporting() -> bool:
    """True while a graph is recorded for export rather than run eagerly.

    `torch.jit.is_tracing()` covers the TorchScript tracer (the legacy ONNX exporter) only; under
    the dynamo exporter (torch.export) it is False, and `torch.compiler.is_exporting()` is the
    test that holds there. `torch.compiler.is_compiling()` is not used: it is also True under
    torch.compile for training, which must keep its checkpointing and kernels. Eager-only work
    (input checks that raise, kernel imports, activation checkpointing) is skipped while this
    is True.
    """
    return (
        torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_exporting()
    )


def is_compiling() -> bool:
    """True while torch.compile records a graph to run (training's compiled step), not export.

    Code may then take a form that compiles to faster kernels, with the same result to rounding
    as the eager form, which stays the reference (tests compare the two).
    """
    return torch.compiler.is_compiling() and not is_exporting()
