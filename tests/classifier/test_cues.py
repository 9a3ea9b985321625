from __future__ import annotations

import pytest

from guard.classifier.cues import has_refusal_cue


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
