"""The repo's own training examples: regenerable, labelled within the contract, small."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from guard.scoring import HAZARDS, Refusal
from guard.training import contrast, data, refusal_styles, synthetic
from guard.training.synthetic import DATA_DIR, SEED


def _rows(name: str) -> list[dict[str, object]]:
    lines = (DATA_DIR / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_committed_contrast_files_are_what_the_generator_writes() -> None:
    assert _rows("contrast_harmful.jsonl") == contrast.harmful_rows(random.Random(SEED + 1))
    assert _rows("contrast_benign.jsonl") == contrast.benign_rows(random.Random(SEED + 2))


def test_contrast_rows_are_labelled_and_cover_every_hazard() -> None:
    harmful = contrast.harmful_rows(random.Random(1))
    benign = contrast.benign_rows(random.Random(2))
    assert {row["category"] for row in harmful} == set(HAZARDS)
    assert all(row["harmful"] is True for row in harmful)
    assert all(row["harmful"] is False and row["category"] is None for row in benign)
    assert not {row["text"] for row in harmful} & {row["text"] for row in benign}


def test_varied_replies_cover_every_refusal_type() -> None:
    rows = refusal_styles.rows(random.Random(3), ["a prompt"], n_per_class=20)
    assert {row["refusal"] for row in rows} == {r.value for r in Refusal}
    assert all("{" not in row["reply"] for row in rows)  # every slot filled


def test_added_data_stays_small() -> None:
    names = ("contrast_harmful.jsonl", "contrast_benign.jsonl", "replies_varied.jsonl")
    assert sum((DATA_DIR / n).stat().st_size for n in names) < 1_000_000
    assert all(Path(DATA_DIR / n).is_file() for n in names)


def test_the_loader_reads_exactly_the_files_the_generator_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written: list[str] = []
    monkeypatch.setattr(synthetic, "_write", lambda path, rows: written.append(path.name))
    synthetic.main()
    assert sorted(written) == sorted(data.REPO_FILES)
    assert all((DATA_DIR / name).stat().st_size > 0 for name in data.REPO_FILES)
