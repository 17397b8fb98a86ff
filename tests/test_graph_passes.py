"""Rewrites of the exported graph (`mbsnet.export.graph_passes`): same result, fewer copies."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mbsnet.export.graph_passes import split_projections  # noqa: E402


def _graph(axis: int = -1, extra_consumer: bool = False) -> onnx.ModelProto:
    """x (2, 3, 4) @ W (4, 6), then Split into 1 + 2 + 3 columns (optionally a second use)."""
    weight = np.arange(24, dtype=np.float32).reshape(4, 6) / 10
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"], name="proj"),
        helper.make_node("Constant", [], ["sizes"], name="sizes",
                         value=numpy_helper.from_array(np.array([1, 2, 3], np.int64))),
        helper.make_node("Split", ["xw", "sizes"], ["a", "b", "c"], name="split", axis=axis),
    ]  # fmt: skip
    outputs = ["a", "b", "c"]
    if extra_consumer:
        nodes.append(helper.make_node("Relu", ["xw"], ["r"], name="relu"))
        outputs.append("r")
    if axis != -1:  # a split of another axis needs sizes that sum to that axis
        nodes[1] = helper.make_node("Constant", [], ["sizes"], name="sizes",
                                    value=numpy_helper.from_array(np.array([1, 1], np.int64)))
        nodes[2] = helper.make_node("Split", ["xw", "sizes"], ["a", "b"], name="split", axis=0)
        outputs = ["a", "b"]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"d{i}", f"e{i}", f"f{i}"])
         for i, name in enumerate(outputs)],
        [numpy_helper.from_array(weight, "W")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _run(proto: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_projection_then_split_becomes_one_matmul_per_part() -> None:
    proto = _graph()
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    want = _run(proto, x)
    assert split_projections(proto) == 1
    onnx.checker.check_model(proto)
    ops = [node.op_type for node in proto.graph.node]
    assert "Split" not in ops and ops.count("MatMul") == 3
    assert "W" not in {t.name for t in proto.graph.initializer}  # the whole weight is gone
    assert "sizes" not in {out for node in proto.graph.node for out in node.output}
    for got, expected in zip(_run(proto, x), want, strict=True):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("case", [dict(axis=0), dict(extra_consumer=True)])
def test_other_splits_are_left_alone(case: dict) -> None:
    proto = _graph(**case)
    before = proto.SerializeToString()
    assert split_projections(proto) == 0
    assert proto.SerializeToString() == before


def test_exported_model_has_no_split_projection_left() -> None:
    import torch

    from mbsnet.export.writer import record_graph
    from mbsnet.models import create_model, preset_config

    torch.manual_seed(0)
    proto = record_graph(create_model("mbsnet", preset_config("tiny")).eval())
    producer = {out: node for node in proto.graph.node for out in node.output}
    weights = {t.name for t in proto.graph.initializer}
    for node in proto.graph.node:
        source = producer.get(node.input[0]) if node.op_type == "Split" else None
        if source is not None and source.op_type == "MatMul":
            assert source.input[1] not in weights, node.name
    assert any(node.name.endswith("__part0") for node in proto.graph.node)
    read = {name for node in proto.graph.node for name in node.input}
    read |= {out.name for out in proto.graph.output}
    dead = [n.name for n in proto.graph.node if not any(o in read for o in n.output)]
    assert not dead and not [t.name for t in proto.graph.initializer if t.name not in read]
