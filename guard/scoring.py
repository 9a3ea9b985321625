"""What the classifier judges, as types every other part of the guard codes against.

The hazard taxonomy is MLCommons' (the one Llama Guard 3 uses, S1-S14) with one
documented variant: cyber attacks are split out of *non-violent crimes* into their own
category, because security work is the largest source of benign lookalikes and
operators need to relax it on its own (see policies/cyber_attacks.yaml).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

HAZARDS: tuple[str, ...] = (
    "violent_crimes",  # S1
    "non_violent_crimes",  # S2 (minus cyber)
    "sex_related_crimes",  # S3
    "child_sexual_exploitation",  # S4
    "defamation",  # S5
    "specialized_advice",  # S6
    "privacy",  # S7
    "intellectual_property",  # S8
    "indiscriminate_weapons",  # S9
    "hate",  # S10
    "suicide_self_harm",  # S11
    "sexual_content",  # S12
    "elections",  # S13
    "code_interpreter_abuse",  # S14
    "cyber_attacks",  # variant: split out of S2
)


class Refusal(enum.StrEnum):
    """How an assistant reply answers the request it follows."""

    NONE = "none"  # compliance
    BARE = "bare"  # says no without a reason
    REASONED = "reasoned"  # says no and names the harm or the why
    PARTIAL = "partial"  # says no, then supplies the content anyway

    @property
    def is_refusal(self) -> bool:
        return self is not Refusal.NONE


class Stage(enum.StrEnum):
    """Which stage of the classifier cascade decided a text."""

    SIEVE = "sieve"  # static-embedding first stage cleared it
    EXIT = "exit"  # early exit after the transformer's front layers cleared it
    MODEL = "model"  # the whole transformer scored it


@dataclass(frozen=True, slots=True)
class HarmScore:
    """Probability of harm for one text: overall and per hazard category."""

    risk: float
    categories: Mapping[str, float]
    stage: Stage = field(default_factory=lambda: Stage.MODEL)

    @property
    def sieved(self) -> bool:
        """A cheap cascade stage cleared the text; the transformer's tail never ran."""
        return self.stage is not Stage.MODEL

    @property
    def category(self) -> str:
        """The most likely hazard category (meaningful when ``risk`` is high)."""
        return max(self.categories, key=lambda name: self.categories[name])

    @classmethod
    def benign(cls) -> HarmScore:
        return cls(risk=0.0, categories=dict.fromkeys(HAZARDS, 0.0))


@dataclass(frozen=True, slots=True)
class ReplyInput:
    """An assistant reply and the user request it answers."""

    prompt: str
    reply: str


@dataclass(frozen=True, slots=True)
class ReplyScore:
    """Refusal type of an assistant reply, with the class probabilities."""

    refusal: Refusal
    probabilities: Mapping[Refusal, float] = field(default_factory=dict)


class Scorer(Protocol):
    """Scores texts for harm and replies for refusal type.

    Implementations run blocking inference off the event loop and may micro-batch
    concurrent calls.  They raise :class:`guard.errors.ScoringError` subclasses only.
    """

    async def score_prompts(self, texts: Sequence[str]) -> list[HarmScore]:
        """Harm scores for user-side texts, one per input, same order."""
        ...

    async def score_replies(self, replies: Sequence[ReplyInput]) -> list[ReplyScore]:
        """Refusal type for assistant replies, one per input, same order."""
        ...

    async def aclose(self) -> None:
        """Release threads and sessions."""
        ...
