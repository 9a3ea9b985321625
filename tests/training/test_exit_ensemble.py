"""guard.training.exit_ensemble: the joined head clears exactly where every member clears."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from guard.training.exit_ensemble import join

ROWS, HIDDEN, OUTPUTS = 64, 8, 3


def _linear_head(seed: int) -> onnx.ModelProto:
    """A one-layer stand-in for an exit head: pooled [rows, HIDDEN] -> harm [rows, OUTPUTS]."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.normal(size=(HIDDEN, OUTPUTS)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(size=OUTPUTS).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["pooled", "w", "b"], ["harm"])],
        "head",
        [helper.make_tensor_value_info("pooled", onnx.TensorProto.FLOAT, ["rows", HIDDEN])],
        [helper.make_tensor_value_info("harm", onnx.TensorProto.FLOAT, ["rows", OUTPUTS])],
        [weight, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _risk(model: onnx.ModelProto, pooled: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["harm"], {"pooled": pooled})
    return np.asarray(1.0 / (1.0 + np.exp(-logits)))


def test_joined_head_clears_only_where_every_member_clears() -> None:
    pooled = np.random.default_rng(0).normal(size=(ROWS, HIDDEN)).astype(np.float32)
    heads, points = [_linear_head(1), _linear_head(2)], [0.3, 0.6]
    joined = join(list(zip(heads, points, strict=True)))
    risk = _risk(joined, pooled)
    members = [_risk(head, pooled) for head in heads]
    cleared = risk[:, 0] < points[0]  # the runtime compares with the first member's point
    expected = (members[0][:, 0] < points[0]) & (members[1][:, 0] < points[1])
    assert expected.any() and (~expected).any()  # the sample has both kinds
    np.testing.assert_array_equal(cleared, expected)

    # Where the first member is the stricter one, the joined risk is its own.
    def margin(risk: np.ndarray, point: float) -> np.ndarray:
        return np.log(risk / (1 - risk)) - np.log(point / (1 - point))

    first = margin(members[0][:, 0], points[0]) >= margin(members[1][:, 0], points[1])
    assert first.any() and (~first).any()
    assert (risk[:, 0] >= members[0][:, 0] - 1e-6).all()
    np.testing.assert_allclose(risk[first, 0], members[0][first, 0], rtol=1e-5)


def test_one_head_is_not_an_ensemble() -> None:
    with pytest.raises(ValueError, match="at least two"):
        join([(_linear_head(1), 0.5)])
