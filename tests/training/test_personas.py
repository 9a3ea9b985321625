"""Role-play and instruction-heavy prompts: framing in both labels, so the request decides."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from guard.scoring import HAZARDS
from guard.training import contrast, data, personas
from guard.training.synthetic import DATA_DIR, SEED


def _rows(name: str) -> list[dict[str, object]]:
    lines = (DATA_DIR / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_committed_persona_files_are_what_the_generator_writes() -> None:
    benign = personas.benign_rows(random.Random(SEED + 4))
    harmful = personas.harmful_rows(
        random.Random(SEED + 5), contrast.harmful_rows(random.Random(SEED + 1))
    )
    assert [row["text"] for row in _rows("personas_benign.jsonl")] == benign
    assert _rows("personas_harmful.jsonl") == harmful


def test_the_same_framings_carry_benign_tasks_and_harmful_requests() -> None:
    requests = contrast.harmful_rows(random.Random(1))
    benign = personas.benign_rows(random.Random(2), n_roleplay=40, n_instructed=20, n_setups=40)
    harmful = personas.harmful_rows(random.Random(3), requests, n=40, n_setups=40)
    assert len(benign) == len(set(benign)) == 100
    assert len(harmful) == 80 and all(row["harmful"] is True for row in harmful)
    assert {row["category"] for row in harmful} <= set(HAZARDS)
    assert all("{" not in text for text in benign + [str(r["text"]) for r in harmful])
    request_texts = {str(row["text"]) for row in requests}
    # Every harmful row ends with (contains) one of the repo's plain harmful requests ...
    assert all(any(r in str(row["text"]) for r in request_texts) for row in harmful)
    # ... and the system-prompt style rules appear on both sides.
    rules = tuple(personas._ANSWER_RULES)
    assert any(rule in text for text in benign for rule in rules)
    assert any(rule in str(row["text"]) for row in harmful for rule in rules)


def test_personas_are_opt_in_and_count_as_hard_benign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "train").mkdir()
    harmful_in = [data._harm(f"how to hurt person {i}", "advbench", None) for i in range(20)]
    question = "Could you explain, in a few friendly paragraphs, how tides work and why? Question"
    benign_in = [data._benign(f"{question} {i}.", "self_instruct") for i in range(20)]
    monkeypatch.setattr(data, "harmful_prompts", lambda train, rng: iter(harmful_in))
    monkeypatch.setattr(data, "benign_prompts", lambda train, rng: iter(benign_in))
    monkeypatch.setattr(data, "replies", lambda train, rng: iter([]))
    without = data.load(tmp_path)
    assert not any(e.source.startswith("repo_persona") for e in without[0] + without[1])
    benign_only = data.load(tmp_path, personas="benign")
    sources = {e.source for e in benign_only[0] + benign_only[1]}
    assert "repo_persona" in sources and "repo_persona_harmful" not in sources
    train, dev = data.load(tmp_path, personas="both")
    everything = [e for e in train + dev if e.source not in ("buried_harmful", "benign_pair")]
    benign = [e for e in everything if e.source == "repo_persona"]
    harmful = [e for e in everything if e.source == "repo_persona_harmful"]
    assert benign and harmful and all(e.harmful is False for e in benign)
    assert len(benign) == 2 * len(_rows("personas_benign.jsonl"))  # written benign: twice
    assert "repo_persona" in data.HARD_BENIGN_SOURCES
