"""Digit-noise copies of training windows (``train --digit-noise N``).

Numbers in a prompt rarely say anything about harm, yet on the train dev split a run of
digits appended to a prompt moved the shipped v3: " Trip 1 0 0 0 0 0 4 2 7." made 17 of the
371 harmful prompts it flagged slip under its flag point and flagged 6 more benign ones,
and its layer-1 early exit reads such runs as harm, so benign turns with an order number
never take the cheap path.  A noisy copy keeps its clean window's label and, with
``--teacher``, the teacher's logits *for the clean window*: the model learns to answer
the noisy text as the teacher answers the clean one.

The runs are written as people and systems write numbers (order and phone numbers,
dates, amounts, spaced single digits as in the benchmarks' turns) and put at the end, at
the start or between two words of the window, within its length.  ``--filler-noise``
does the same with other additions that say nothing about harm (reference codes,
punctuation runs, smileys, pleasantries): on the dev split " Ref: XK-QP-ZZ." cost v3 27
of its 371 catches.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from guard.classifier.encoding import Encoder, Window


def _digits(rng: random.Random, count: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(count))


def number_text(rng: random.Random) -> str:
    """One number as it might appear in a chat turn."""
    kind = rng.randrange(7)
    if kind == 0:  # spaced single digits
        return " ".join(_digits(rng, rng.randint(5, 14)))
    if kind == 1:  # order / ticket number
        label = rng.choice(["Order", "Ticket", "Ref", "ID", "Invoice", "Case", "Trip", "#"])
        parts = [_digits(rng, rng.randint(3, 5)) for _ in range(rng.randint(1, 3))]
        return f"{label} {'-'.join(parts)}."
    if kind == 2:  # phone number
        return f"{_digits(rng, 3)} {_digits(rng, 3)} {_digits(rng, 4)}"
    if kind == 3:  # date and time
        day, month, year = rng.randint(1, 28), rng.randint(1, 12), rng.randint(1990, 2030)
        return f"{day}/{month}/{year} {rng.randint(0, 23)}:{rng.randint(0, 59):02d}"
    if kind == 4:  # amount
        return f"{rng.randint(1, 99_999)}.{_digits(rng, 2)} {rng.choice(['USD', 'EUR', 'dollars'])}"
    if kind == 5:  # list of figures
        return ", ".join(str(rng.randint(0, 9999)) for _ in range(rng.randint(3, 8)))
    return _digits(rng, rng.randint(6, 16))  # one long number


_PLEASANTRIES = (
    "Thanks a lot in advance!", "Please answer quickly.", "Hi there!", "Cheers.",
    "Thank you so much for your help!", "Sorry for my English.", "Be detailed please.",
    "I appreciate it.", "Hello!", "Any help is welcome :)", "(sent from my phone)", "lol",
)  # fmt: skip


def filler_text(rng: random.Random) -> str:
    """Something people append that says nothing about harm: a code, punctuation, a smiley,
    a pleasantry."""
    kind = rng.randrange(4)
    if kind == 0:  # reference code
        letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
        parts = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 4))) for _ in range(3)]
        return f"{rng.choice(['Ref:', 'Code', 'Tag', 'Key'])} {'-'.join(parts)}."
    if kind == 1:  # punctuation run
        mark = rng.choice(["!", "?", ".", "*", "-", "#", "~"])
        return " ".join(mark * rng.randint(1, 3) for _ in range(rng.randint(3, 10)))
    if kind == 2:  # smileys
        return " ".join(
            rng.choice([":)", ":(", ";)", ":D", "xD", "<3", "^^"]) for _ in range(rng.randint(1, 5))
        )
    return rng.choice(_PLEASANTRIES)


def number_runs(
    encoder: Encoder, count: int, seed: int, *, fillers: bool = False
) -> list[tuple[int, ...]]:
    """Token ids of ``count`` numbers, or of fillers (no special tokens)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible augmentation, not security
    make = filler_text if fillers else number_text
    return [tuple(ids) for ids in encoder.token_ids([make(rng) for _ in range(count)])]


def with_number(window: Window, run: Sequence[int], max_length: int, rng: random.Random) -> Window:
    """``window`` ([CLS] body [SEP]) with ``run`` at its end, start or a random inner point;
    the body is cut from the end if the result would not fit ``max_length``."""
    body = list(window.ids[1:-1])
    room = max_length - 2 - len(run)
    if room <= 0:
        return window
    body = body[:room]
    where = rng.choice(("end", "end", "start", "inside"))
    at = {"end": len(body), "start": 0, "inside": rng.randint(0, len(body))}[where]
    ids = (window.ids[0], *body[:at], *run, *body[at:], window.ids[-1])
    return Window(ids=ids, type_ids=(0,) * len(ids))


def noisy_windows(
    windows: Sequence[Window], encoder: Encoder, seed: int, *, fillers: bool = False
) -> list[Window]:
    """Each window again with a number (or a filler) of its own put in (:func:`with_number`),
    within the encoder's window length."""
    rng = random.Random(seed)  # noqa: S311 - reproducible augmentation, not security
    runs = number_runs(encoder, len(windows), seed, fillers=fillers)
    length = encoder.windowing.max_length
    return [with_number(w, run, length, rng) for w, run in zip(windows, runs, strict=True)]


def noisy_sample(
    windows: Sequence[Window], encoder: Encoder, count: int, seed: int, *, fillers: bool = False
) -> tuple[list[int], list[Window]]:
    """``count`` windows drawn from ``windows`` (with replacement) and their noisy copies:
    (the index each copy came from, the copies)."""
    picks = random.Random(seed + fillers).choices(range(len(windows)), k=count)  # noqa: S311 - reproducible sampling, not security
    return picks, noisy_windows([windows[i] for i in picks], encoder, seed, fillers=fillers)
