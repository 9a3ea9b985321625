"""benchmarks/matmul_ceiling.py: the shipped model's products found, and one timed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from benchmarks import matmul_ceiling
from guard.classifier.labels import MODEL_FILE

SHIPPED = Path(__file__).resolve().parents[2] / "models"


def test_every_layer_contributes_its_six_products() -> None:
    if not (SHIPPED / MODEL_FILE).is_file():
        pytest.skip("models/ holds no model")
    shapes = matmul_ceiling.weight_shapes(SHIPPED)
    # Per layer: query, key, value and output (hidden x hidden), two feed-forward ones.
    square = shapes[(384, 384)]
    assert square % 4 == 0 and square >= 4
    layers = square // 4
    assert shapes[(384, 1536)] == shapes[(1536, 384)] == layers


def test_a_timed_product_is_the_product() -> None:
    session = matmul_ceiling.product_session(8, 32, 16)
    (out,) = session.run(None, {"x": np.ones((8, 32), np.float32)})
    assert out.shape == (8, 16)
    assert matmul_ceiling.time_product(8, 32, 16, repeats=3) > 0
