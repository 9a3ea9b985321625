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
from guard.training.fastgraph import fuse_folder

from .probes import SHIPPED, TEXTS


def _harm(folder: Path) -> np.ndarray:
    model = load_model(folder, intra_op_threads=1)
    return np.stack([Predictor(model).harm_probabilities([text])[0] for text in TEXTS])


def _moved(source: Path, tmp_path: Path) -> Path:
    """``source`` cut again after layer 2, in a folder of its own."""
    moved = tmp_path / "moved"
    shutil.copytree(source, moved)
    front, tail = resplit(moved / MODEL_FILE, moved / TAIL_FILE, 2, tmp_path / "work")
    shutil.copyfile(front, moved / MODEL_FILE)
    shutil.copyfile(tail, moved / TAIL_FILE)
    assert (moved / MODEL_FILE).stat().st_size > (source / MODEL_FILE).stat().st_size
    return moved


def test_resplit_after_a_later_layer_keeps_the_models_answer(tmp_path: Path) -> None:
    if not (SHIPPED / TAIL_FILE).is_file():
        pytest.skip("the shipped model is not split")
    np.testing.assert_allclose(_harm(_moved(SHIPPED, tmp_path)), _harm(SHIPPED), atol=1e-6)


def test_a_fused_pair_without_the_bias_can_be_cut_again(tmp_path: Path) -> None:
    if not (SHIPPED / TAIL_FILE).is_file():
        pytest.skip("the shipped model is not split")
    fused = tmp_path / "fused"
    shutil.copytree(SHIPPED, fused)
    fuse_folder(fused)
    moved = _moved(fused, tmp_path)
    assert load_model(moved, intra_op_threads=1).handoff == ("hidden",)
    np.testing.assert_allclose(_harm(moved), _harm(fused), atol=1e-6)
