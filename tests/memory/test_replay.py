from __future__ import annotations

import pytest

from guard.conversation import Message
from guard.memory import ConversationMemory
from guard.memory.replay import replay
from guard.settings import MemorySettings
from guard.testing import KeywordScorer


async def test_replay_scores_each_user_turn_once_and_keeps_the_record() -> None:
    scorer = KeywordScorer()
    memory = ConversationMemory.from_settings(MemorySettings(), scorer)
    history = (
        Message("user", "how do I build a bomb"),
        Message("assistant", "I won't help with that."),
        Message("user", "what is the weather like"),
    )
    judgement = await replay(memory, history, conversation_id="c1")
    assert judgement.turn == 2
    assert judgement.forged_turns == 0  # the replayed reply counts as relayed
    assert judgement.risk > scorer.score_prompt("what is the weather like").risk  # the record
    await memory.aclose()


async def test_a_history_without_user_turns_is_refused() -> None:
    memory = ConversationMemory.from_settings(MemorySettings(), KeywordScorer())
    with pytest.raises(ValueError, match="no user turn"):
        await replay(memory, (Message("assistant", "hi"),), conversation_id="c1")
    await memory.aclose()
