"""The request bodies every benchmark sends: a benign 64-token user turn, and histories.

Every request carries a user turn of its own: ``USER_BASE`` plus "Trip N." with a fresh
nine-digit N written digit by digit, so no benchmark is flattered by the guard's
per-message score cache (each turn is classified, as in real traffic) and every turn is
exactly 64 tokens under the shipped tokenizer (``models/tokenizer.json``, counting [CLS]
and [SEP]); ``python3 -m benchmarks.harness.payload`` prints the counts.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

USER_BASE = (
    "I am planning a week-long trip to Portugal in spring with two friends who love food "
    "and history. Could you suggest an itinerary that splits our time between Lisbon and Porto, "
    "and please tell us which local dishes we should not miss at all?"
)
MODEL = "fake"
FIRST_NUMBER = 100_000_000
NUMBERS_PER_RUN = 1_000_000  # a wrk run numbers its requests from its own block
_MARK = "@@NUMBER@@"
_numbers = itertools.count(FIRST_NUMBER)
_runs = itertools.count(1)


def user_text(number: int) -> str:
    return f"{USER_BASE} Trip {_spaced(number)}."


def _spaced(number: int) -> str:
    """Digit by digit: one token per digit, so every turn has the same length."""
    return " ".join(str(number))


USER_TURN = user_text(FIRST_NUMBER + 1)  # a representative turn (64 tokens)


def fresh_user_text() -> str:
    """A user turn no earlier request of this process carried."""
    return user_text(next(_numbers))


def chat_body(messages: list[dict[str, str]], *, stream: bool = False) -> str:
    body: dict[str, object] = {"model": MODEL, "messages": messages}
    if stream:
        body["stream"] = True
    return json.dumps(body)


def single_turn(*, stream: bool = False) -> str:
    """A one-turn request with a fresh user turn."""
    return chat_body([{"role": "user", "content": fresh_user_text()}], stream=stream)


def single_turn_template() -> tuple[str, str, int]:
    """(head, tail, first number): head + spaced(first + k) + tail is request k's body.

    For wrk's Lua, which builds each body itself; every call gets its own number block
    (after :data:`FIRST_NUMBER` + 100 M, clear of :func:`fresh_user_text`'s numbers).
    """
    body = chat_body([{"role": "user", "content": f"{USER_BASE} Trip {_MARK}."}])
    head, tail = body.split(_MARK)
    return head, tail, FIRST_NUMBER + 100 * NUMBERS_PER_RUN + next(_runs) * NUMBERS_PER_RUN


def token_counts(tokenizer_file: Path, samples: int = 2000) -> Counter[int]:
    """Token counts of ``samples`` numbered turns as the benchmarks number them."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    numbers = [FIRST_NUMBER + run * NUMBERS_PER_RUN + k for run in (0, 7, 150, 400)
               for k in range(1, 200_000, 400)][:samples]  # fmt: skip
    return Counter(len(tokenizer.encode(user_text(n)).ids) for n in numbers)


if __name__ == "__main__":
    import sys

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("models/tokenizer.json")
    print(sorted(token_counts(path).items()))
