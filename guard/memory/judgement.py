"""The conversation memory's verdict on a conversation, as the engine sees it."""

from __future__ import annotations

from dataclasses import dataclass, field

from guard.scoring import HarmScore


@dataclass(frozen=True, slots=True)
class ConversationJudgement:
    """Conversation-level view of the request's last user turn.

    ``conversation`` and ``tenant`` are keyed hashes, safe to log.
    """

    conversation: str
    tenant: str
    turn: int  # user turns in the request's history
    turn_score: HarmScore  # last user turn (with recent context)
    # Recent user turns scored together (split intent); the last turn's score when the
    # joint text was not scored (``joint_scored``: it could not change the decision).
    joint_score: HarmScore
    risk: float  # conversation-level risk, 0-1
    trend: float  # per-turn risk slope over recent turns; > 0 is escalating
    category: str | None
    prior_refusals: int = 0
    prior_blocks: int = 0
    refused_categories: frozenset[str] = field(default_factory=frozenset)
    forged_turns: int = 0  # assistant turns in history the guard never relayed
    pruned: bool = False  # history shorter than what the guard has seen
    first_contact: bool = True  # the guard had no state for this conversation
    # The last turn is a later turn too short to judge alone (the memory's
    # min_turn_words): it counts only in context, through the joint text and ``risk``.
    fragment: bool = False
    scored_turns: int = 0  # user turns scored fresh for this request (rest cached)
    # How the conversation was identified: "explicit" (client id header), "opening"
    # (fingerprint of a history with no reply yet) or "continuation" (fingerprint
    # including the first reply).  The tracker's record() needs it.
    key_kind: str = "explicit"
    joint_scored: bool = True
