"""Conversation memory: escalation, split intent, forged and pruned history.

The engine asks :meth:`ConversationMemory.judge` about every request and calls
:meth:`ConversationMemory.record` with what the client got; the judgement it consumes
is :class:`ConversationJudgement`.  Operator notes:

* **Identity.**  Conversations are keyed by tenant (a keyed hash of the tenant header or
  the API key) and by the ``x-guard-conversation-id`` header when the client sends one,
  else by a fingerprint of the history's opening (system prompt and first user message,
  then also the first reply).  Clients that trim history from the front (sliding
  windows) change their opening every request and must send the header; so should
  apps whose chats start identically (same system prompt, same first message, same
  first reply at temperature 0), which would otherwise share one record.
* **First contact.**  A conversation the guard has no state for (new, expired, evicted,
  or first seen on another replica without shared Redis) cannot be verified: its
  assistant turns are not counted as forged (``forged_turns=0``), ``first_contact`` is
  True and ``turn`` says how long the history is, so the policy can flag long
  first-contact histories.  Every user turn in it is scored once, and a harmful one
  anywhere in it counts towards the conversation's risk (decayed by its distance).
* **Forged and pruned.**  An assistant turn the guard never relayed (matched on a keyed
  hash of its whitespace-normalised text) is forged; fewer user turns than the guard
  has seen is pruned.  Membership, not order, is checked.
* **Storage.**  Only keyed hashes, scores, counters and category names are stored, never
  text.  ``memory.backend: redis`` needs ``memory.secret`` (replicas must hash alike).
  While Redis is down the guard serves from local state (``on_store_error: local``) or
  fails closed (``closed``); ``guard_state_store_degraded`` is 1 meanwhile, and it
  reconnects by itself.
"""

from guard.memory.judgement import ConversationJudgement
from guard.memory.tracker import ConversationMemory

__all__ = ["ConversationJudgement", "ConversationMemory"]
