"""What the memory keeps per conversation, and its compact serialised form.

Only keyed hashes, scores, counters and category names: never text.  The JSON uses
one-letter keys because every request reads and writes it (msgpack is not installed;
compact JSON is within a few bytes of it for this shape).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import structlog

from guard.errors import StateStoreError

log = structlog.get_logger(__name__)

MAX_RELAYED = 256  # assistant replies remembered per conversation (the newest)
_VERSION = 1


@dataclass(frozen=True, slots=True)
class ConversationState:
    """A conversation's record, as the guard saw it across requests."""

    user_turns: int = 0  # most user turns seen in one request
    relayed: tuple[str, ...] = ()  # keyed hashes of replies the guard relayed, newest last
    peak_risk: float = 0.0  # highest turn/joint risk seen, at ``peak_turn``
    peak_turn: int = 0
    peak_category: str | None = None
    refusals: int = 0  # replies relayed that were refusals (the model's or the guard's)
    blocks: int = 0  # requests the guard blocked
    refused_categories: tuple[str, ...] = ()
    escalated: bool = False  # counted once in guard_escalations_total
    updated_at: float = 0.0

    def with_relayed(self, reply_hash: str) -> ConversationState:
        if reply_hash in self.relayed:
            return self
        return replace(self, relayed=(*self.relayed, reply_hash)[-MAX_RELAYED:])

    def to_bytes(self) -> bytes:
        data: dict[str, Any] = {"v": _VERSION, "n": self.user_turns, "u": round(self.updated_at, 3)}
        if self.relayed:
            data["r"] = list(self.relayed)
        if self.peak_risk:
            data["p"] = [round(self.peak_risk, 4), self.peak_turn, self.peak_category]
        if self.refusals:
            data["f"] = self.refusals
        if self.blocks:
            data["b"] = self.blocks
        if self.refused_categories:
            data["c"] = list(self.refused_categories)
        if self.escalated:
            data["e"] = 1
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> ConversationState:
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("v") != _VERSION:
                raise ValueError("unknown state version")
            peak = data.get("p") or [0.0, 0, None]
            return cls(
                user_turns=int(data["n"]),
                relayed=tuple(str(h) for h in data.get("r", ())),
                peak_risk=float(peak[0]),
                peak_turn=int(peak[1]),
                peak_category=None if peak[2] is None else str(peak[2]),
                refusals=int(data.get("f", 0)),
                blocks=int(data.get("b", 0)),
                refused_categories=tuple(str(c) for c in data.get("c", ())),
                escalated=bool(data.get("e", 0)),
                updated_at=float(data.get("u", 0.0)),
            )
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise StateStoreError("conversation state is unreadable") from exc


def decode_for_update(raw: bytes | str | None) -> ConversationState | None:
    """The current state for a read-modify-write; an unreadable one is started afresh.

    Raising here would leave a corrupt (or older-version) entry in place for its whole
    TTL, so every request of the conversation would fail to record.
    """
    if raw is None:
        return None
    try:
        return ConversationState.from_bytes(raw)
    except StateStoreError:
        log.warning("state_unreadable_replaced")
        return None
