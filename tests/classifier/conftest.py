from __future__ import annotations

from pathlib import Path

import pytest

from guard.classifier.labels import LABELS_FILE, MODEL_FILE, TOKENIZER_FILE
from guard.classifier.predictor import Predictor
from guard.classifier.session import LoadedModel, load_model
from guard.classifier.sieve import (
    EXIT_FILE,
    EXIT_LABELS_FILE,
    SIEVE_FILE,
    SIEVE_LABELS_FILE,
    TAIL_FILE,
)
from guard.settings import SHIPPED_MODEL_DIR

SHIPPED_FILES = (
    MODEL_FILE,
    TAIL_FILE,
    TOKENIZER_FILE,
    LABELS_FILE,
    SIEVE_FILE,
    SIEVE_LABELS_FILE,
    EXIT_FILE,
    EXIT_LABELS_FILE,
)


def shipped_model_missing() -> str | None:
    missing = [name for name in SHIPPED_FILES if not (SHIPPED_MODEL_DIR / name).is_file()]
    return (
        f"models/ lacks {', '.join(missing)} (train it: python3 -m guard.training.train)"
        if missing
        else None
    )


@pytest.fixture(scope="session")
def model_dir() -> Path:
    reason = shipped_model_missing()
    if reason:
        pytest.skip(reason)
    return SHIPPED_MODEL_DIR


@pytest.fixture(scope="session")
def loaded_model(model_dir: Path) -> LoadedModel:
    return load_model(model_dir)


@pytest.fixture(scope="session")
def predictor(loaded_model: LoadedModel) -> Predictor:
    return Predictor(loaded_model)
