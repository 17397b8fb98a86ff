"""A float16 copy of an exported graph whose inputs and outputs stay float32."""

from __future__ import annotations

import copy
import heapq
import warnings
from typing import Any
from unittest import mock

from mbsnet.export.common import ExportError


def _retype_casts(proto: Any) -> int:
    """Make Cast(to=float) nodes whose output the converter typed float16 cast to float16.

    The converter turns float32 tensors into float16 but leaves every Cast's ``to=float``
    as it was (the model writes ``.to(float32)`` for its scan and ``.to(wave.dtype)`` for
    integer frame counts), and onnxruntime then refuses the graph (measured: "Type
    (tensor(float16)) of output arg ... does not match expected type (tensor(float))").
    Returns the number of Casts changed.
    """
    import onnx

    declared = {v.name: v.type.tensor_type.elem_type for v in proto.graph.value_info}
    count = 0
    for node in proto.graph.node:
        if node.op_type != "Cast" or declared.get(node.output[0]) != onnx.TensorProto.FLOAT16:
            continue
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i == onnx.TensorProto.FLOAT:
                attribute.i = onnx.TensorProto.FLOAT16
                count += 1
    return count


def sort_topology(graph: Any) -> None:
    """Put a graph's nodes (and its subgraphs') in topological order, in linear time.

    Stands in for onnxconverter-common's own sort, which scans every remaining node for each
    node it places: quadratic, measured at 185 s of a 250 s tiny export with 19,779 nodes.
    Ties keep the original order. Names no node here produces (graph inputs, initializers, an
    outer scope's values) count as available.
    """
    nodes = list(graph.node)
    producer = {name: i for i, node in enumerate(nodes) for name in node.output if name}
    users: list[list[int]] = [[] for _ in nodes]
    waiting = [0] * len(nodes)
    for i, node in enumerate(nodes):
        for j in {producer[name] for name in node.input if name in producer}:
            users[j].append(i)
            waiting[i] += 1
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for k in users[i]:
            waiting[k] -= 1
            if waiting[k] == 0:
                heapq.heappush(ready, k)
    placed = set(order)
    order += [i for i in range(len(nodes)) if i not in placed]  # a cycle: left as it was
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)
    for node in graph.node:
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                sort_topology(sub)


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
    with warnings.catch_warnings():
        # It warns once per weight too small for float16 (flushed to +-1e-7): expected.
        warnings.simplefilter("ignore")
        with mock.patch.object(float16, "sort_topology", sort_topology):
            converted = float16.convert_float_to_float16(
                copy.deepcopy(proto), keep_io_types=True
            )
    _retype_casts(converted)
    return converted
