"""The request bodies every benchmark sends: one benign 64-token user turn, and histories.

The user turn is 64 tokens under the shipped tokenizer (``models/tokenizer.json``,
counting [CLS] and [SEP]); ``python3 -m benchmarks.harness.payload`` prints the count.
"""

from __future__ import annotations

import json
from pathlib import Path

USER_TURN = (
    "I am planning a week-long trip to Portugal in early spring with two friends who love food "
    "and history. Could you suggest an itinerary that splits our time between Lisbon and Porto, "
    "with a day trip or two, and tell us which local dishes we should not miss along the way? "
    "Thank you!"
)
MODEL = "fake"


def chat_body(messages: list[dict[str, str]], *, stream: bool = False) -> str:
    body: dict[str, object] = {"model": MODEL, "messages": messages}
    if stream:
        body["stream"] = True
    return json.dumps(body)


def single_turn(*, stream: bool = False) -> str:
    """The one-turn request: the 64-token user turn."""
    return chat_body([{"role": "user", "content": USER_TURN}], stream=stream)


def user_turn(turn: int) -> str:
    """Turn ``turn``'s user message: the 64-token turn, numbered so every turn is new text."""
    return f"(Question {turn}) {USER_TURN}"


def token_count(text: str, tokenizer_file: Path) -> int:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return len(tokenizer.encode(text).ids)


if __name__ == "__main__":
    import sys

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("models/tokenizer.json")
    print(token_count(USER_TURN, path))
