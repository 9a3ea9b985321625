"""``guard.training.cascade`` writes the jointly tuned points where the runtime reads them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from guard.classifier.sieve import EXIT_LABELS_FILE, SIEVE_LABELS_FILE, load_sieve_labels
from guard.training import cascade

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_points_from_saved_scores_are_written_with_their_record(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    for name in (SIEVE_LABELS_FILE, EXIT_LABELS_FILE):
        shutil.copyfile(MODELS / name, model / name)
    shipped_sieve = load_sieve_labels(model).clear_below
    # Two harmful texts, each missed by one stage only; three benign ones.
    scores = cascade.Scores(
        sieve=np.array([shipped_sieve / 2, 0.9, 0.01, 0.02, np.inf]),
        exit=np.array([0.9, 0.001, 0.05, 0.5, np.inf]),
        caught=np.array([True, True, False, False, False]),
        benign=np.array([False, False, True, True, False]),
    )
    saved = tmp_path / "scores.npz"
    scores.save(saved)
    assert cascade.Scores.load(saved).caught.tolist() == scores.caught.tolist()

    cascade.main(["--data", str(tmp_path), "--model", str(model), "--work", str(tmp_path / "w"),
                  "--scores", str(saved)])  # fmt: skip

    sieve, exit_head = load_sieve_labels(model), load_sieve_labels(model, EXIT_LABELS_FILE)
    # The shipped pair clears neither harmful text, so neither may the new one; it clears
    # both benign texts (the sieve opens to 0.9, the exit head to 0.9).
    assert sieve.clear_below == pytest.approx(0.9)
    assert exit_head.clear_below == pytest.approx(0.9)
    for labels in (sieve, exit_head):
        assert labels.tuning["joint_model_caught_cleared"] == 0.0
        assert labels.tuning["joint_benign_short_cleared"] == 1.0
        assert "dev_benign_cleared" not in labels.tuning  # described the old point
    shipped = json.loads((MODELS / SIEVE_LABELS_FILE).read_text())
    assert sieve.tuning["alone_clear_below"] == shipped["clear_below"]
    assert sieve.model_sha256 == shipped["model_sha256"]
