"""Reply typing around the head: late views of a long refusal."""

from __future__ import annotations

from guard.reply_stream import sentence_ends
from guard.reply_typing import late_views


def test_late_views_join_the_opening_to_each_sentence_out_of_sight() -> None:
    text = "No. " + "A sentence of caveats here. " * 20 + "The end"
    views = late_views(text)
    assert views and all(
        view.startswith("No. A sentence") or view == "No. The end" for view in views
    )
    assert views[-1] == "No. The end" and late_views(text, newest_only=True) == ["No. The end"]
    assert len(views) == sum(1 for end in sentence_ends(text) if 300 <= end < len(text))
    assert late_views("No. Short reply.") == [] and late_views("x" * 400) == []
