"""The interface every conversation state store implements.

Keys are :attr:`guard.memory.identity.ConversationKey.storage_key` strings (keyed
hashes).  ``update`` is the one write path the tracker uses: a read-modify-write that
the store makes atomic with respect to other writers of the same key, so two replicas
recording replies of one conversation at once do not lose either record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from guard.memory.state import ConversationState

Change = Callable[[ConversationState | None], ConversationState]


class StateStore(Protocol):
    """Conversation state by key, with a time to live refreshed on every write.

    Raises :class:`guard.errors.StateStoreUnavailable` when the backend cannot be
    reached and :class:`guard.errors.StateStoreError` for anything else.
    """

    async def get(self, key: str) -> ConversationState | None:
        """The state under ``key``, or None when there is none (or it expired)."""
        ...

    async def put(self, key: str, state: ConversationState) -> None:
        """Replace the state under ``key``."""
        ...

    async def update(self, key: str, change: Change) -> ConversationState:
        """Apply ``change`` to the current state atomically; return the new state."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
