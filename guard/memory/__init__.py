"""Conversation memory: escalation, split intent, forged and pruned history."""

from guard.memory.judgement import ConversationJudgement

__all__ = ["ConversationJudgement"]
