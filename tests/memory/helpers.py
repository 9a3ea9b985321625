"""Building requests for memory tests: ``chat("s:system", "u:hi", "a:hello", "u:next")``."""

from __future__ import annotations

from guard.conversation import Conversation, Message
from guard.decisions import GuardRequest

_ROLES = {"s": "system", "u": "user", "a": "assistant"}


def chat(*messages: str) -> Conversation:
    return Conversation(tuple(Message(_ROLES[m[0]], m[2:]) for m in messages))


def request(
    *messages: str, tenant: str | None = "key-A", conversation_id: str | None = None
) -> GuardRequest:
    return GuardRequest(
        request_id="r", conversation=chat(*messages), tenant=tenant, conversation_id=conversation_id
    )


def reply_to(turn: int) -> str:
    return f"Here is a helpful answer number {turn}."
