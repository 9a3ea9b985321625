"""guard.training.framing_probe: fixed benign framings, disjoint from the training framings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guard.training import framing_probe, personas

from .probes import SHIPPED


def test_the_probes_stay_as_written_and_unlike_the_training_framings() -> None:
    texts = framing_probe.probes()
    assert len(texts) == framing_probe.PROBES and texts == framing_probe.probes()
    assert texts[0].startswith(
        tuple(p for p in framing_probe._PERSONAS if p) + tuple(framing_probe._TASKS)
    )
    trained = set(personas._ANSWER_RULES) | set(personas._RULES) | set(personas._JOBS)
    assert not trained & set(framing_probe._RULES + framing_probe._TASKS)


@pytest.mark.model
def test_the_shipped_model_is_measured_at_its_own_flag_point(tmp_path: Path) -> None:
    out = tmp_path / "framing.json"
    assert framing_probe.main(["--model", str(SHIPPED), "--json-out", str(out)]) == 0
    [row] = json.loads(out.read_text())
    assert row["model"] == str(SHIPPED) and 0.0 <= row["flagged"] <= 1.0
    assert 0.0 < row["mean_risk"] < 1.0 and row["flag"] > 0
