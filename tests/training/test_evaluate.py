"""The category measure of guard.training.evaluate, on tiny stand-in eval files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from guard.scoring import HAZARDS
from guard.training.evaluate import category_sets, evaluate_categories


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
