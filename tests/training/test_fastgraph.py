"""guard.training.fastgraph: one fused attention node per layer, the same answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

import onnx

from guard.classifier.labels import LABELS_FILE, MODEL_FILE
from guard.classifier.predictor import Predictor
from guard.classifier.session import load_model, widened
from guard.classifier.sieve import TAIL_FILE
from guard.errors import ModelLoadError
from guard.scoring import ReplyInput
from guard.training.fastgraph import (
    MAX_DIFFERENCE,
    drop_bias,
    fuse_attention,
    fuse_file,
    fuse_folder,
)
from guard.training.files import sha256

from .probes import SHIPPED, TEXTS


@pytest.fixture(scope="module")
def fused(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (SHIPPED / MODEL_FILE).is_file():
        pytest.skip("models/ holds no model")
    folder = tmp_path_factory.mktemp("fused") / "model"
    shutil.copytree(SHIPPED, folder)
    fuse_folder(folder)
    return folder


def _ops(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def _layers(path: Path) -> int:
    names = {n.name.split("/")[3] for n in onnx.load(str(path)).graph.node if "/layer." in n.name}
    return len(names)


def test_every_layer_gets_one_fused_attention_node(fused: Path) -> None:
    for name in (MODEL_FILE, TAIL_FILE):
        if not (SHIPPED / name).is_file():
            continue
        ops, shipped = _ops(fused / name), _ops(SHIPPED / name)
        assert ops.count("MultiHeadAttention") == _layers(SHIPPED / name) > 0
        assert "Softmax" not in ops and "IsNaN" not in ops
        if "Softmax" in shipped:  # shipped unfused (the front, kept so to spare the repo)
            assert len(ops) < len(shipped)


def test_fused_model_answers_as_the_export_did(fused: Path) -> None:
    before = Predictor(load_model(SHIPPED, intra_op_threads=1))
    after = Predictor(load_model(fused, intra_op_threads=1))
    for text in TEXTS:
        np.testing.assert_allclose(
            after.harm_probabilities([text]),
            before.harm_probabilities([text]),
            atol=MAX_DIFFERENCE,
        )
        reply = [ReplyInput(text, "I won't help with that: it could hurt people.")]
        np.testing.assert_allclose(
            after.refusal_probabilities(reply),
            before.refusal_probabilities(reply),
            atol=MAX_DIFFERENCE,
        )
    # A padded batch: the mask must keep a short text's answer apart from a long one's.
    batched = after.harm_probabilities(TEXTS)[:, 0]
    alone = np.array([before.harm_probabilities([t])[0, 0] for t in TEXTS])
    np.testing.assert_allclose(batched, alone, atol=0.05)


def test_a_fused_pair_hands_the_tail_the_states_alone(fused: Path) -> None:
    if not (SHIPPED / TAIL_FILE).is_file():
        pytest.skip("the shipped model is not split")
    tail = onnx.load(str(fused / TAIL_FILE)).graph
    front = onnx.load(str(fused / MODEL_FILE)).graph
    assert [i.name for i in tail.input] == ["hidden", "attention_mask"]
    assert [o.name for o in front.output] == ["hidden"]
    # The expanded mask's ops went with it: nothing in the front builds a 4-d bias now.
    assert "Expand" not in _ops(fused / MODEL_FILE)
    model = load_model(fused, intra_op_threads=1)
    assert model.handoff == ("hidden",)
    # The idle lane's second copy (two threads) keeps the pair's hand-off.
    wide = widened(model, "cpu", 2)
    assert wide.handoff == ("hidden",)
    np.testing.assert_allclose(
        Predictor(wide).harm_probabilities(list(TEXTS)),
        Predictor(model).harm_probabilities(list(TEXTS)),
        atol=1e-4,
    )


def test_a_tail_that_takes_what_its_front_does_not_give_stops_loading(
    fused: Path, tmp_path: Path
) -> None:
    if not (SHIPPED / TAIL_FILE).is_file():
        pytest.skip("the shipped model is not split")
    mixed = tmp_path / "mixed"
    shutil.copytree(fused, mixed)
    shutil.copyfile(SHIPPED / TAIL_FILE, mixed / TAIL_FILE)  # still takes attention_bias
    with pytest.raises(ModelLoadError, match=r"lacks the outputs \['attention_bias'\]"):
        load_model(mixed, intra_op_threads=1)


def test_dropping_the_bias_needs_a_tail_that_no_longer_reads_it(tmp_path: Path) -> None:
    if not (SHIPPED / TAIL_FILE).is_file():
        pytest.skip("the shipped model is not split")
    front, tail = tmp_path / MODEL_FILE, tmp_path / TAIL_FILE
    shutil.copyfile(SHIPPED / MODEL_FILE, front)
    reading = onnx.load(str(SHIPPED / TAIL_FILE))
    reading.graph.node.append(onnx.helper.make_node("Identity", ["attention_bias"], ["copy"]))
    reading.graph.output.append(
        onnx.helper.make_tensor_value_info("copy", onnx.TensorProto.BOOL, None)
    )
    onnx.save(reading, str(tail))
    assert drop_bias(front, tail) is False
    assert sha256(front) == sha256(SHIPPED / MODEL_FILE)
    shutil.copyfile(SHIPPED / TAIL_FILE, tail)
    assert drop_bias(front, tail) is True
    assert drop_bias(front, tail) is False  # nothing left to drop


def test_label_map_records_the_fused_files_checksum(fused: Path) -> None:
    labels = json.loads((fused / LABELS_FILE).read_text(encoding="utf-8"))
    assert labels["model_sha256"] == sha256(fused / MODEL_FILE) != sha256(SHIPPED / MODEL_FILE)


def test_fusing_twice_changes_nothing(fused: Path) -> None:
    path = fused / MODEL_FILE
    checksum = sha256(path)
    assert fuse_file(path) is False
    assert sha256(path) == checksum
    with pytest.raises(ValueError, match="no unfused"):
        fuse_attention(onnx.load(str(path)))


def test_tail_only_leaves_the_front_file_as_it_was(tmp_path: Path) -> None:
    if not (SHIPPED / TAIL_FILE).is_file():
        pytest.skip("the shipped model is not split")
    folder = tmp_path / "model"
    shutil.copytree(SHIPPED, folder)
    before = sha256(folder / MODEL_FILE)
    assert folder / MODEL_FILE not in fuse_folder(folder, tail_only=True)
    assert sha256(folder / MODEL_FILE) == before
    assert "MultiHeadAttention" in _ops(folder / TAIL_FILE)
    assert "Softmax" not in _ops(folder / TAIL_FILE)
