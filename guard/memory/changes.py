"""How a conversation's state changes after a judgement and after a recorded reply.

Pure functions of the current state (the stores apply them atomically), plus the
decayed *peak* that carries a conversation's worst moment forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from guard.memory.state import ConversationState
from guard.memory.store import Change
from guard.scoring import HarmScore


@dataclass(frozen=True, slots=True)
class Peak:
    """A risk observed at a turn, carried forward with a per-turn decay."""

    risk: float
    turn: int
    category: str

    def at(self, turn: int, decay: float) -> float:
        return self.risk * decay ** max(turn - self.turn, 0)


@dataclass(frozen=True, slots=True)
class Scored:
    recent: list[HarmScore]  # the last user turns, oldest first, as scored
    counted: list[HarmScore]  # the same as they count alone (fragments benign)
    joint: HarmScore
    fresh_turns: int
    earlier: Peak | None  # the worst freshly scored turn before the recent window
    joint_scored: bool = True  # False: ``joint`` is the last turn's score (not wanted)


def peak_of(state: ConversationState) -> Peak | None:
    if state.peak_category is None or state.peak_risk <= 0.0:
        return None
    return Peak(state.peak_risk, state.peak_turn, state.peak_category)


def with_peak(
    state: ConversationState | None, candidate: Peak | None, turn: int, decay: float
) -> ConversationState | None:
    """``state`` with ``candidate`` as its peak where that weighs more at ``turn``."""
    if candidate is None or candidate.risk <= 0.0:
        return state
    current = peak_of(state) if state is not None else None
    if current is not None and current.at(turn, decay) >= candidate.at(turn, decay):
        return state
    return replace(
        state or ConversationState(),
        peak_risk=candidate.risk,
        peak_turn=candidate.turn,
        peak_category=candidate.category,
    )


def judged(
    *,
    seed: ConversationState | None,
    turn: int,
    peaks: Sequence[Peak | None],
    escalated: bool,
    decay: float,
    now: float,
) -> Change:
    """State change after a judgement: turns seen, the peak, the escalation mark."""

    def change(current: ConversationState | None) -> ConversationState:
        state = current or seed or ConversationState()
        for peak in peaks:
            state = with_peak(state, peak, turn, decay) or state
        return replace(
            state,
            user_turns=max(state.user_turns, turn),
            escalated=state.escalated or escalated,
            updated_at=now,
        )

    return change


def recorded(
    *,
    turn: int,
    reply_hash: str | None,
    refused: bool,
    blocked: bool,
    category: str | None,
    now: float,
) -> Change:
    """State change after a relayed reply or a block."""

    def change(current: ConversationState | None) -> ConversationState:
        state = current or ConversationState(user_turns=turn)
        if reply_hash is not None:
            state = state.with_relayed(reply_hash)
        if refused or blocked:
            categories = set(state.refused_categories)
            if category is not None:
                categories.add(category)
            state = replace(
                state,
                refusals=state.refusals + int(refused),
                blocks=state.blocks + int(blocked),
                refused_categories=tuple(sorted(categories)),
            )
        return replace(state, updated_at=now)

    return change
