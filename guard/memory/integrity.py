"""History integrity: is the history a request carries the one the guard relayed?

The guard remembers keyed hashes of the assistant replies it relayed (whitespace
normalised, never text).  Against a conversation's state:

* an assistant turn the guard never relayed is *forged* (a client or attacker wrote
  the model's words for it: a fake earlier compliance is a classic jailbreak);
* a history with fewer user turns than the guard has already seen is *pruned* (turns
  were dropped, e.g. the refused ones).

First contact (no state for the conversation) cannot be verified: nothing is counted
as forged and the judgement says ``first_contact=True`` with the number of user turns,
so the policy can flag long first-contact histories.  Only the newest
:data:`~guard.memory.state.MAX_RELAYED` assistant turns of a history are checked,
matching what the state remembers.  Membership, not order, is verified: a reply the
guard relayed in this conversation is accepted wherever it appears in the history
(regenerated replies make order ambiguous, and moving genuine replies gains little).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from guard.memory.state import MAX_RELAYED, ConversationState


@dataclass(frozen=True, slots=True)
class IntegrityReport:
    forged_turns: int
    pruned: bool
    first_contact: bool


def check_history(
    state: ConversationState | None, assistant_hashes: Sequence[str], user_turns: int
) -> IntegrityReport:
    """Compare the request's history (hashes of its assistant turns) with the state."""
    if state is None:
        return IntegrityReport(forged_turns=0, pruned=False, first_contact=True)
    relayed = frozenset(state.relayed)
    checked = assistant_hashes[-MAX_RELAYED:]
    forged = sum(1 for reply_hash in checked if reply_hash not in relayed)
    return IntegrityReport(
        forged_turns=forged, pruned=user_turns < state.user_turns, first_contact=False
    )
