"""Replay a whole history through the memory the way a client would have sent it.

``guard score`` and offline evaluation see a conversation all at once; the guard in
production sees it turn by turn, each request carrying the history so far, with the
assistant's replies recorded as relayed.  Replaying gives the same judgement of the last
user turn as the live guard would have reached (state, trend and record included).
"""

from __future__ import annotations

from collections.abc import Sequence

from guard.conversation import Conversation, Message
from guard.decisions import GuardRequest
from guard.memory.judgement import ConversationJudgement
from guard.memory.tracker import ConversationMemory


async def replay(
    memory: ConversationMemory,
    messages: Sequence[Message],
    *,
    conversation_id: str,
    tenant: str | None = None,
) -> ConversationJudgement:
    """The judgement of the last user turn of ``messages``, reached turn by turn.

    Raises ``ValueError`` when ``messages`` has no user turn.
    """
    judgement: ConversationJudgement | None = None
    for index, message in enumerate(messages):
        if message.role == "user":
            request = GuardRequest(
                request_id=f"replay-{index}",
                conversation=Conversation(tuple(messages[: index + 1])),
                tenant=tenant,
                conversation_id=conversation_id,
            )
            judgement = await memory.judge(request)
        elif message.role == "assistant" and judgement is not None:
            await memory.record(
                judgement, relayed=message.text, refusal=None, category=None, blocked=False
            )
    if judgement is None:
        raise ValueError("the history has no user turn")
    return judgement
