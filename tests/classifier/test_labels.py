from __future__ import annotations

import pytest

from guard.classifier.labels import RISK_BLOCK, RISK_FLAG, Labels, Thresholds
from guard.scoring import HAZARDS, Refusal


def _labels(flag: float, block: float) -> Labels:
    return Labels(
        model_version="test",
        model_sha256="0" * 64,
        hazards=HAZARDS,
        refusal_classes=tuple(r.value for r in Refusal),
        max_length=128,
        stride=64,
        reply_prompt_tokens=32,
        thresholds=Thresholds(flag=flag, block=block),
        layers=4,
    )


def test_tuned_points_land_on_the_policy_scale() -> None:
    labels = _labels(0.3, 0.7)
    assert labels.calibrate(0.3) == pytest.approx(RISK_FLAG)
    assert labels.calibrate(0.7) == pytest.approx(RISK_BLOCK)
    assert (labels.calibrate(0.0), labels.calibrate(1.0)) == (0.0, 1.0)


def test_calibration_keeps_the_order_of_scores() -> None:
    labels = _labels(0.47, 0.562)
    grid = [i / 100 for i in range(101)]
    calibrated = [labels.calibrate(p) for p in grid]
    assert calibrated == sorted(calibrated)


def test_decisions_match_raw_thresholds_after_calibration() -> None:
    labels = _labels(0.2, 0.9)
    for raw, expected in ((0.1, "allow"), (0.2, "flag"), (0.89, "flag"), (0.9, "block")):
        assert labels.decision(labels.calibrate(raw)) == expected


def test_degenerate_thresholds_do_not_divide_by_zero() -> None:
    labels = _labels(0.0, 1.0)
    assert labels.calibrate(0.0) == RISK_FLAG
    assert labels.calibrate(1.0) == pytest.approx(RISK_BLOCK)


def test_a_refit_reply_head_is_recorded_and_checked() -> None:
    record = {
        "l2": 1e-4, "examples": 10, "sources": {"repo_replies": 10}, "dev_refit": {"f1": 0.9},
        "dev_shipped": {"f1": 0.8}, "wall_s": 1.0, "tail_sha256": "0" * 64,
    }  # fmt: skip
    raw = _labels(0.5, 0.8).model_dump()
    assert Labels.model_validate({**raw, "reply_head": record}).reply_head is not None
    with pytest.raises(ValueError, match="reply_head"):
        Labels.model_validate({**raw, "reply_head": {**record, "typo": 1}})
