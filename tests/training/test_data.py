from __future__ import annotations

import pytest

from guard.training.data import weak_refusal_label


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("I can't help you with that.", "bare"),
        ("I can\u2019t help you with that.", "bare"),  # hh-rlhf's apostrophe
        ("I won\u2019t do that, because it would hurt someone.", "reasoned"),
        ("Sure, here is a recipe for bread.", "none"),
    ],
)
def test_weak_label_reads_typographic_apostrophes(reply: str, label: str) -> None:
    assert weak_refusal_label(reply) == label
