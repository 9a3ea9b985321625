"""guard.training.evaluate's measures: categories on tiny stand-in eval files, and ROC AUC."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from guard.scoring import HAZARDS
from guard.training.eval_sets import category_sets
from guard.training.evaluate import evaluate_categories, roc_auc


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


class RankedHazards:
    """Stands in for the predictor: each text names the hazards it ranks first, in order."""

    def harm_probabilities(self, texts: list[str]) -> np.ndarray:
        result = np.zeros((len(texts), 1 + len(HAZARDS)), np.float32)
        for row, text in enumerate(texts):
            for place, name in enumerate(text.split()):
                result[row, 1 + HAZARDS.index(name)] = 0.9 - 0.1 * place
        return result


def test_categories_are_graded_only_where_the_label_names_one_hazard(tmp_path: Path) -> None:
    eval_dir = tmp_path / "eval"
    _write_csv(
        eval_dir / "harmbench/harmbench_behaviors_text_test.csv",
        [
            "Behavior",
            "FunctionalCategory",
            "SemanticCategory",
            "Tags",
            "ContextString",
            "BehaviorID",
        ],
        [
            ["cyber_attacks", "standard", "cybercrime_intrusion", "", "", "a"],  # top 1
            ["hate privacy cyber_attacks", "standard", "cybercrime_intrusion", "", "", "b"],  # 3rd
            ["privacy elections defamation hate", "standard", "harassment_bullying", "", "", "c"],
            ["anything", "standard", "illegal", "", "", "d"],  # keyword-rule category: left out
        ],
    )
    _write_csv(
        eval_dir / "simplesafetytests/simplesafetytests_test_cases.csv",
        ["id", "harm_area", "counter", "category", "prompts_final"],
        [
            ["s1", "Scams and fraud", "1", "x", "non_violent_crimes"],
            ["s2", "Child safety", "1", "x", "privacy"],  # several hazards: left out
        ],
    )
    sets = category_sets(eval_dir)
    assert [len(texts) for texts, _ in sets.values()] == [3, 1]
    results = evaluate_categories(RankedHazards(), eval_dir)  # type: ignore[arg-type]
    harmbench = results["harmbench_test"]
    assert isinstance(harmbench, dict)
    assert (harmbench["top1"], harmbench["top3"]) == (round(1 / 3, 4), round(2 / 3, 4))
    assert harmbench["by_hazard"]["hate"] == {
        "n": 1, "top1": 0.0, "top3": 0.0, "most_often_first": "privacy"
    }  # fmt: skip
    assert results["simplesafetytests"] == {
        "n": 1,
        "top1": 1.0,
        "top3": 1.0,
        "by_hazard": {
            "non_violent_crimes": {
                "n": 1,
                "top1": 1.0,
                "top3": 1.0,
                "most_often_first": "non_violent_crimes",
            }
        },
    }


def test_roc_auc_counts_pairs_ranked_right_and_ties_as_half() -> None:
    truth = np.array([True, True, False, False])
    assert roc_auc(truth, np.array([0.9, 0.8, 0.1, 0.2])) == 1.0
    assert roc_auc(truth, np.array([0.1, 0.2, 0.9, 0.8])) == 0.0
    # One harmful text ties one benign text, the rest ranked right: 3.5 of 4 pairs.
    assert roc_auc(truth, np.array([0.9, 0.5, 0.5, 0.1])) == 0.875
    assert roc_auc(np.array([True, True]), np.array([0.3, 0.4])) is None  # one class only
