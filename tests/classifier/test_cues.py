from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from guard.classifier import cues
from guard.classifier.cues import has_refusal_cue
from guard.classifier.encoding import plain_quotes

DATA = Path(__file__).resolve().parents[2] / "guard" / "training" / "data"


@pytest.mark.parametrize(
    "reply",
    [
        "I'm sorry, but I can't help with that.",
        "No. I won't write that.",
        "As an AI language model, I must decline.",
        "That would be illegal, so I'd rather not.",
        "I shouldn't provide this. However, hypothetically...",
        "I'm not able to assist with this request.",
        "This goes against my guidelines.",
        "Unfortunately that isn't something I do.",
        # Typographic apostrophes, as many chat models write them.
        "I can’t help you with that.",
        "I won’t write that, and I’m not going to.",
    ],
)
def test_refusals_show_a_cue(reply: str) -> None:
    assert has_refusal_cue(reply)


@pytest.mark.parametrize(
    "reply",
    [
        "Paris is the capital of France.",
        "Here is a Python function that reverses a list:\n\ndef rev(xs):\n    return xs[::-1]",
        "Sure! Tides are caused mainly by the Moon's gravity.",
    ],
)
def test_plain_answers_show_none(reply: str) -> None:
    assert not has_refusal_cue(reply)


def test_the_fast_matcher_answers_as_the_case_insensitive_one() -> None:
    """The cue list runs on case-folded text behind a first-letter lookahead for speed;
    the plain IGNORECASE reading of the same alternatives must agree on every text."""
    alternatives = re.sub(r"\(\?=\\b\[[a-z]+\]\)", "", cues._CUES.pattern, count=1)
    assert alternatives != cues._CUES.pattern
    reference = re.compile(alternatives, re.IGNORECASE | re.VERBOSE)
    texts = [
        value
        for path in sorted(DATA.glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
        for value in json.loads(line).values()
        if isinstance(value, str)
    ]
    texts += [text.upper() for text in texts[:2000]] + [text.title() for text in texts[:2000]]
    assert len(texts) > 5000
    differ = [t for t in texts if bool(reference.search(plain_quotes(t))) != has_refusal_cue(t)]
    assert differ == []
