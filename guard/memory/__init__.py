"""Conversation memory: escalation, split intent, forged and pruned history."""

from guard.memory.judgement import ConversationJudgement
from guard.memory.tracker import ConversationMemory

__all__ = ["ConversationJudgement", "ConversationMemory"]
