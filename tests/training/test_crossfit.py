"""guard.training.crossfit: folds of written benign kinds, thresholds on unseen kinds."""

from __future__ import annotations

import numpy as np
import pytest

from guard.training import data
from guard.training.crossfit import lowest_within


def test_folds_deal_every_kind_to_exactly_one_fold() -> None:
    kinds = set(data.benign_kinds())
    folds = [data.fold_kinds(k, 3) for k in range(3)]
    assert set().union(*folds) == kinds
    assert sum(len(f) for f in folds) == len(kinds)
    assert all(folds)
    with pytest.raises(ValueError, match="fold 3"):
        data.fold_kinds(3, 3)


def test_every_written_benign_row_has_a_kind() -> None:
    kinds = data.benign_kinds()
    assert "" not in kinds and "None" not in kinds
    assert sum(len(texts) for texts in kinds.values()) > 500


def test_threshold_is_the_lowest_point_within_the_limit_and_never_below_the_floor() -> None:
    risk = np.array([0.1] * 90 + [0.6] * 6 + [0.9] * 4)  # 10% at 0.6, 4% at 0.9
    assert lowest_within(risk, 0.04, floor=0.0) == pytest.approx(0.605)
    assert lowest_within(risk, 0.10, floor=0.0) == pytest.approx(0.105)
    assert lowest_within(risk, 0.10, floor=0.5) == pytest.approx(0.5)
    assert lowest_within(risk, 0.0, floor=0.0) == pytest.approx(0.905)
