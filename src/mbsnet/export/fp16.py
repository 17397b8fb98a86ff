"""A float16 copy of an exported graph whose inputs and outputs stay float32."""

from __future__ import annotations

import copy
import warnings
from typing import Any

from mbsnet.export.common import ExportError


def _drop_noop_casts(proto: Any) -> int:
    """Turn Cast(to=float) of tensors that already are float32 into Identity; returns the count.

    The model upcasts its scan with ``.to(float32)``, which the exporter records as a Cast even
    when the input is float32 already. The float16 converter keeps such a Cast's ``to=float``
    while typing its output float16, and onnxruntime then refuses to load the graph (measured:
    "Type (tensor(float16)) of output arg ... does not match expected type (tensor(float))").
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {
        value.name: value.type.tensor_type.elem_type
        for value in [*inferred.graph.value_info, *inferred.graph.input]
    }
    count = 0
    for node in proto.graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        noop = to == onnx.TensorProto.FLOAT and types.get(node.input[0]) == onnx.TensorProto.FLOAT
        if node.op_type == "Cast" and noop:
            node.op_type = "Identity"
            del node.attribute[:]
            count += 1
    return count


def to_float16(proto: Any) -> Any:
    """Convert a float32 graph to float16 (onnxconverter-common), keeping float32 I/O.

    Raises:
        ExportError: onnxconverter-common is not installed.
    """
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ExportError(
            "--fp16 needs onnxconverter-common: pip install 'mbsnet[export]'"
        ) from None
    proto = copy.deepcopy(proto)
    _drop_noop_casts(proto)
    with warnings.catch_warnings():
        # It warns once per weight too small for float16 (flushed to +-1e-7): expected.
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(proto, keep_io_types=True)
