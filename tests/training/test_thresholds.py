"""The cost-aware threshold rule of guard.training.thresholds.tune_thresholds."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("torch")

from guard.training.data import Example
from guard.training.thresholds import (
    alert_pool,
    matched_thresholds,
    recall_kept_thresholds,
    tune_thresholds,
)


class FixedRisk:
    """Stands in for the ONNX predictor: a fixed risk per prompt text."""

    def __init__(self, risk: dict[str, float]) -> None:
        self.risk = risk

    def harm_probabilities(self, texts: list[str]) -> np.ndarray:
        column = np.array([[self.risk[t]] for t in texts])
        return np.hstack([column, np.zeros((len(texts), 15))])


def _dev(
    harmful: list[float], easy: list[float], hard: list[float]
) -> tuple[list[Example], dict[str, float]]:
    examples: list[Example] = []
    risk: dict[str, float] = {}
    for i, r in enumerate(harmful):
        examples.append(Example(text=f"h{i}", source="advbench_behaviors", harmful=True))
        risk[f"h{i}"] = r
    for i, r in enumerate(easy):
        examples.append(Example(text=f"e{i}", source="gsm8k", harmful=False))
        risk[f"e{i}"] = r
    for i, r in enumerate(hard):
        examples.append(Example(text=f"k{i}", source="repo_benign", harmful=False))
        risk[f"k{i}"] = r
    return examples, risk


def test_flag_rises_until_hard_benign_false_positives_are_at_most_two_percent() -> None:
    # 100 hard benign prompts, 10 of them scoring 0.4-0.76: best F1 sits low (0.3) but
    # the 2% rule lets at most two (0.72, 0.76) through, so flag must clear 0.68.
    hard = [0.01] * 90 + [0.4 + 0.04 * i for i in range(10)]
    examples, risk = _dev(harmful=[0.9] * 50 + [0.35] * 50, easy=[0.01] * 200, hard=hard)
    flag, block, stats = tune_thresholds(FixedRisk(risk), examples)  # type: ignore[arg-type]
    assert stats["dev_best_f1_threshold"] <= 0.35
    assert 0.68 < flag <= 0.685 + 1e-9
    assert stats["dev_hard_fpr_at_flag"] <= 0.02
    assert block >= flag


def test_flag_never_below_the_best_f1_point() -> None:
    examples, risk = _dev(harmful=[0.8] * 50, easy=[0.6] * 30 + [0.01] * 170, hard=[0.01] * 100)
    flag, _, stats = tune_thresholds(FixedRisk(risk), examples)  # type: ignore[arg-type]
    assert stats["dev_hard_fpr_at_flag"] == 0.0
    assert flag == pytest.approx(stats["dev_best_f1_threshold"])
    assert flag > 0.6  # best F1 excludes the easy benign prompts at 0.6


def test_block_keeps_all_benign_false_positives_at_most_one_percent() -> None:
    easy = [0.01] * 190 + [0.5 + 0.04 * i for i in range(10)]
    examples, risk = _dev(harmful=[0.95] * 50, easy=easy, hard=[0.01] * 100)
    _, block, stats = tune_thresholds(FixedRisk(risk), examples)  # type: ignore[arg-type]
    assert stats["dev_fpr_at_block"] <= 0.01
    assert stats["dev_recall_at_block"] == 1.0
    assert block < 0.95


class PointedRisk(FixedRisk):
    """A fixed-risk stand-in that also carries flag and block points, as a loaded model does."""

    def __init__(self, risk: dict[str, float], flag: float, block: float) -> None:
        super().__init__(risk)
        thresholds = SimpleNamespace(flag=flag, block=block)
        self.model = SimpleNamespace(labels=SimpleNamespace(thresholds=thresholds))


def test_matched_points_raise_as_many_alerts_as_the_reference() -> None:
    pool = [f"t{i}" for i in range(100)]
    # The reference flags 20 of the pool and blocks 5; the candidate scores on its own scale.
    reference = PointedRisk({t: i / 100 for i, t in enumerate(pool)}, flag=0.795, block=0.945)
    candidate = PointedRisk({t: (i / 100) ** 3 for i, t in enumerate(pool)}, 0.5, 0.9)
    matched = matched_thresholds(candidate, reference, pool)  # type: ignore[arg-type]
    assert (matched.reference_flag_share, matched.reference_block_share) == (0.2, 0.05)
    assert (matched.flag_share, matched.block_share) == (0.2, 0.05)
    assert 0.79**3 < matched.flag < 0.80**3 and 0.94**3 < matched.block < 0.95**3


def test_matched_block_stays_above_flag_when_the_rates_meet() -> None:
    pool = [f"t{i}" for i in range(10)]
    reference = PointedRisk({t: 0.99 for t in pool}, flag=0.5, block=0.9)  # flags = blocks
    candidate = PointedRisk({t: i / 10 for i, t in enumerate(pool)}, 0.5, 0.9)
    matched = matched_thresholds(candidate, reference, pool)  # type: ignore[arg-type]
    assert matched.block > matched.flag


def test_the_alert_pool_is_a_fixed_sample_of_first_user_turns(tmp_path: Path) -> None:
    folder = tmp_path / "hh_rlhf_harmless_base"
    folder.mkdir()
    rows = [
        {"messages": [{"role": "user", "content": f"question {i}"},
                      {"role": "assistant", "content": "answer"}]}
        for i in range(50)
    ] + [{"messages": [{"role": "assistant", "content": "no user turn"}]}]  # fmt: skip
    (folder / "hh_rlhf_harmless_base.norm.jsonl").write_text(
        "\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8"
    )
    pool = alert_pool(tmp_path, size=20)
    assert len(pool) == len(set(pool)) == 20 and pool == alert_pool(tmp_path, size=20)
    assert all(text.startswith("question ") for text in pool)


def test_kept_recall_points_catch_what_the_reference_catches_and_no_less() -> None:
    harmful = [f"h{i}" for i in range(10)]
    # The reference catches 8 of 10 at flag and 5 at block; the candidate ranks them its own way.
    reference = PointedRisk({t: i / 10 for i, t in enumerate(harmful)}, flag=0.2, block=0.5)
    candidate = PointedRisk({t: 0.5 + i / 20 for i, t in enumerate(harmful)}, 0.1, 0.2)
    kept = recall_kept_thresholds(candidate, reference, harmful)  # type: ignore[arg-type]
    assert (kept.reference_flag_share, kept.reference_block_share) == (0.8, 0.5)
    assert (kept.flag_share, kept.block_share) == (0.8, 0.5)
    # As high as they go: the 8th and 5th highest candidate risks, rounded down.
    assert kept.flag == 0.6 and kept.block == 0.75
