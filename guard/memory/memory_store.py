"""The in-process state store: an LRU with a time to live and a memory bound.

States are held serialised (the same bytes Redis would hold), which keeps a
conversation at a few hundred bytes and makes the byte bound easy to keep honestly.
Everything here is synchronous under the hood, so ``update`` is atomic on the event
loop without a lock.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from guard.memory.state import ConversationState, decode_for_update
from guard.memory.store import Change
from guard.metrics import GuardMetrics

# Per-entry cost beyond the key's and value's lengths: the OrderedDict node, the tuple,
# the float and the str/bytes object headers.  Measured with tracemalloc on CPython
# 3.11 (benchmarks/memory_cost.py: ~555 B per 10-turn conversation in all).
ENTRY_OVERHEAD = 240


class MemoryStore:
    """LRU of serialised states, bounded by count and approximate bytes, with TTL."""

    def __init__(
        self,
        *,
        ttl_s: float,
        max_conversations: int,
        max_bytes: int,
        metrics: GuardMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._max_items = max_conversations
        self._max_bytes = max_bytes
        self._metrics = metrics
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def approx_bytes(self) -> int:
        return self._bytes

    async def get(self, key: str) -> ConversationState | None:
        return self._get(key)

    async def put(self, key: str, state: ConversationState) -> None:
        self._put(key, state)

    async def update(self, key: str, change: Change) -> ConversationState:
        state = change(self._get(key, for_update=True))
        self._put(key, state)
        return state

    async def aclose(self) -> None:
        self._items.clear()
        self._bytes = 0
        self._report()

    def _get(self, key: str, *, for_update: bool = False) -> ConversationState | None:
        entry = self._items.get(key)
        if entry is None:
            return None
        expires_at, raw = entry
        if expires_at <= self._clock():
            self._drop(key)
            self._report()
            return None
        self._items.move_to_end(key)
        return decode_for_update(raw) if for_update else ConversationState.from_bytes(raw)

    def _put(self, key: str, state: ConversationState) -> None:
        raw = state.to_bytes()
        if key in self._items:
            self._drop(key)
        self._items[key] = (self._clock() + self._ttl, raw)
        self._bytes += _cost(key, raw)
        while self._items and (len(self._items) > self._max_items or self._bytes > self._max_bytes):
            oldest = next(iter(self._items))
            self._drop(oldest)
        self._report()

    def _drop(self, key: str) -> None:
        _, raw = self._items.pop(key)
        self._bytes -= _cost(key, raw)

    def _report(self) -> None:
        if self._metrics is not None:
            self._metrics.conversations.set(len(self._items))


def _cost(key: str, raw: bytes) -> int:
    return len(key) + len(raw) + ENTRY_OVERHEAD
