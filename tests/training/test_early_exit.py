"""guard.training.cut.resplit: the int8 halves cut again elsewhere compute the same."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from guard.classifier.labels import MODEL_FILE
from guard.classifier.predictor import Predictor
from guard.classifier.session import load_model
from guard.classifier.sieve import TAIL_FILE
from guard.training.cut import resplit

from .probes import SHIPPED, TEXTS


def test_resplit_after_a_later_layer_keeps_the_models_answer(tmp_path: Path) -> None:
    if not (SHIPPED / TAIL_FILE).is_file():
        pytest.skip("the shipped model is not split")
    moved = tmp_path / "model"
    shutil.copytree(SHIPPED, moved)
    front, tail = resplit(moved / MODEL_FILE, moved / TAIL_FILE, 2, tmp_path / "work")
    shutil.copyfile(front, moved / MODEL_FILE)
    shutil.copyfile(tail, moved / TAIL_FILE)
    assert (moved / MODEL_FILE).stat().st_size > (SHIPPED / MODEL_FILE).stat().st_size

    def harm(folder: Path) -> np.ndarray:
        model = load_model(folder, intra_op_threads=1)
        return np.stack([Predictor(model).harm_probabilities([text])[0] for text in TEXTS])

    np.testing.assert_allclose(harm(moved), harm(SHIPPED), atol=1e-6)
