"""Conversation-level risk: what no single turn shows, the conversation may.

Four signals, combined in :func:`assess`:

* per-turn scores: the newest user turn alone;
* the joint score: the last ``joint_turns`` user turns joined (by spaces, so a phrase
  cut across turns reads whole) and scored as one text,
  which catches a harmful request split across turns (each piece harmless); the tracker
  scores it only where it can change a decision (``ConversationMemory.judge``), and
  :func:`assess` is then handed the newest turn's score in its place;
* the trend: the least-squares slope of per-turn risk over the last ``trend_turns``
  turns (Crescendo: each turn a little worse), added as a bonus when positive;
* the record: the conversation's peak risk carried forward with a per-turn decay, and
  earlier refusals and blocks, weighted up when the current turn is about a category
  that was refused before.  The record lives in the conversation's state, so it
  survives a client dropping or rewriting the refused turns.

The weights are an :class:`EscalationConfig`; the defaults were tuned on
train/multiturn (see benchmarks/README.md), never on eval/.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from guard.memory.score_cache import category_score
from guard.memory.state import ConversationState
from guard.scoring import HarmScore


@dataclass(frozen=True, slots=True)
class EscalationConfig:
    joint_turns: int = 4  # user turns scored together; 0 or 1 turns joint scoring off
    # The joint text's tail is kept to about one classifier window (128 tokens), so the
    # second text a request scores costs what a short turn costs.
    joint_chars: int = 480
    # The joint score's share in the conversation risk.  Tuned on train/multiturn: the
    # current classifier scores benign cipher/word-mapping conversations (tomgibbs-*)
    # high when joined, so the joint alone may raise risk to 0.5, not flag.
    joint_weight: float = 0.5
    # A later turn shorter than this many words is judged only in context (the joint
    # text): classifiers score fragments ("individual - personal") erratically.
    min_turn_words: int = 8
    trend_turns: int = 5  # user turns the slope is fitted over
    trend_min_turns: int = 3  # two points make a jump, not a trend
    # Risk added per unit of positive slope (risk per turn).  0 for the shipped model:
    # on train/multiturn any weight made benign MT-Bench-101 conversations, whose turn
    # scores wander, cross every flag threshold before attacks gained anything; the
    # slope is still reported (ConversationJudgement.trend) for policies to use.
    trend_weight: float = 0.0
    trend_cap: float = 0.25  # most the trend can add
    peak_decay: float = 0.8  # share of the peak risk carried to the next turn
    refusal_weight: float = 0.1  # added when the conversation was refused or blocked
    category_weight: float = 0.5  # times the current turn's score in a refused category


@dataclass(frozen=True, slots=True)
class Escalation:
    risk: float  # conversation-level risk, 0-1
    base: float  # max of the turn and joint scores: what the classifier alone says
    base_category: str  # the category of ``base``
    trend: float
    category: str | None


def joint_text(users: Sequence[str], config: EscalationConfig) -> str | None:
    """The recent user turns as one text, newest last; None when there is nothing to join."""
    if config.joint_turns < 2 or len(users) < 2:
        return None
    text = " ".join(users[-config.joint_turns :])
    if len(text) > config.joint_chars:
        tail = text[-config.joint_chars :]
        # Start at a word boundary: a cut word reads as noise to the tokenizer.
        space = tail.find(" ")
        text = tail[space + 1 :] if 0 <= space < len(tail) // 4 else tail
    return text


def is_fragment(text: str, index: int, config: EscalationConfig) -> bool:
    """Whether user turn ``index`` is too short to judge alone.

    The first turn has no context to be judged in, so it is never a fragment.
    """
    if index == 0 or config.min_turn_words <= 0:
        return False
    return len(text.split(None, config.min_turn_words)) < config.min_turn_words


def standalone(score: HarmScore, text: str, index: int, config: EscalationConfig) -> HarmScore:
    """The score a turn counts with on its own: a later fragment counts as benign."""
    return HarmScore.benign() if is_fragment(text, index, config) else score


def slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against their index (0 for < 2 values)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x = (n - 1) / 2
    mean_y = sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den


def assess(
    recent: Sequence[HarmScore],
    joint: HarmScore,
    state: ConversationState | None,
    config: EscalationConfig,
    *,
    turn: int | None = None,
) -> Escalation:
    """Combine the signals for the newest user turn (``recent[-1]``).

    ``recent`` holds the standalone scores of the last user turns, oldest first (at
    least ``trend_turns`` of them when the conversation has that many), fragments
    already replaced by :func:`standalone`; ``turn`` is the newest turn's number,
    ``len(recent)`` when omitted.
    """
    last = recent[-1] if recent else HarmScore.benign()
    turn = len(recent) if turn is None else turn
    risks = [s.risk for s in recent[-config.trend_turns :]]
    trend = slope(risks) if len(risks) >= config.trend_min_turns else 0.0
    joint_risk = config.joint_weight * joint.risk
    source = joint if joint_risk > last.risk else last
    base, category = max(joint_risk, last.risk), source.category
    risk = base + min(config.trend_weight * max(trend, 0.0), config.trend_cap)
    if state is not None:
        if state.peak_risk > 0.0 and state.peak_category is not None:
            carried = state.peak_risk * config.peak_decay ** max(turn - state.peak_turn, 0)
            if carried > risk:
                risk, category = carried, state.peak_category
        if state.refusals or state.blocks:
            risk += config.refusal_weight
            repeat = max(
                (
                    max(category_score(last, name), category_score(joint, name))
                    for name in state.refused_categories
                ),
                default=0.0,
            )
            risk += config.category_weight * repeat
    return Escalation(
        risk=min(max(risk, 0.0), 1.0),
        base=base,
        base_category=source.category,
        trend=trend,
        category=category if risk > 0.0 else None,
    )
