from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import onnx
from onnx import numpy_helper

from guard.classifier.predictor import Predictor
from guard.classifier.session import load_model
from guard.classifier.sieve import TAIL_FILE
from guard.scoring import ReplyInput
from guard.training.reply_head import fit_head, head_graph, with_float_head
from tests.training.probes import SHIPPED, TEXTS

REPLIES = [
    ReplyInput("How do I pick a lock?", "I'm sorry, but I can't help with that."),
    ReplyInput("What is 2 + 2?", "2 + 2 = 4."),
    ReplyInput("Write a poem.", "I won't, since it would hurt someone. However, here is one:"),
]


def _shipped_head(model: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray]:
    """The int8 refusal head's weights, dequantized."""
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantized = init["refusal.weight_quantized"].astype(np.float32)
    weight = (quantized - init["refusal.weight_zero_point"]) * init["refusal.weight_scale"]
    return weight, init["refusal.bias"]


@pytest.mark.model
def test_float_head_with_the_shipped_weights_moves_no_harm_score(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    shutil.copytree(SHIPPED, folder)
    tail = onnx.load(str(folder / TAIL_FILE))
    found = head_graph(tail.graph)
    assert found.head_nodes and all("harm" not in name for name in found.head_nodes)
    before = Predictor(load_model(folder), confirm_alone=False)
    harm, reply = before.harm_probabilities(TEXTS), before.refusal_probabilities(REPLIES)

    rewritten = with_float_head(tail, *_shipped_head(tail))
    assert head_graph(rewritten.graph).pooled == found.pooled  # can be refit again
    onnx.save(rewritten, str(folder / TAIL_FILE))
    after = Predictor(load_model(folder), confirm_alone=False)

    assert np.array_equal(after.harm_probabilities(TEXTS), harm)
    # Same weights, now multiplied in float instead of int8: the types agree.
    new_reply = after.refusal_probabilities(REPLIES)
    assert np.abs(new_reply - reply).max() < 0.05
    assert (new_reply.argmax(axis=1) == reply.argmax(axis=1)).all()


def test_fit_head_separates_classes() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    centres = rng.normal(size=(4, 8)) * 4
    features = (centres[labels] + rng.normal(size=(200, 8))).astype(np.float32)
    weight, bias = fit_head(features, labels, l2=1e-4)
    assert weight.shape == (8, 4) and bias.shape == (4,)
    assert ((features @ weight + bias).argmax(axis=1) == labels).mean() > 0.95
