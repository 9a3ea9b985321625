"""Keeps the guard serving while the shared store is down, and notices it come back.

``on_store_error="local"``: operations fall back to an in-process store, the
``guard_state_store_degraded`` gauge reads 1 and ``state_store_degraded`` is logged
once per outage.  ``"closed"``: :class:`StateStoreUnavailable` propagates and the
engine blocks.  Either way the primary is tried again ``retry_interval_s`` after the
last failure (redis-py reconnects its pool on the next command), so the guard recovers
without a restart.  State written locally during an outage stays local: once Redis is
back it is authoritative again, and conversations continue from what it holds.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

import structlog

from guard.errors import StateStoreUnavailable
from guard.memory.state import ConversationState
from guard.memory.store import Change, StateStore
from guard.metrics import GuardMetrics

log = structlog.get_logger(__name__)
T = TypeVar("T")
OnError = Literal["local", "closed"]


class ResilientStore:
    """A primary store with a fallback policy for outages."""

    def __init__(
        self,
        primary: StateStore,
        *,
        on_error: OnError,
        fallback: StateStore | None = None,
        metrics: GuardMetrics | None = None,
        retry_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if on_error == "local" and fallback is None:
            raise ValueError("on_error='local' needs a fallback store")
        self._primary = primary
        self._fallback = fallback
        self._on_error = on_error
        self._metrics = metrics
        self._retry_interval = retry_interval_s
        self._clock = clock
        self._degraded = False
        self._retry_at = 0.0

    @property
    def degraded(self) -> bool:
        return self._degraded

    async def get(self, key: str) -> ConversationState | None:
        return await self._call("get", lambda s: s.get(key))

    async def put(self, key: str, state: ConversationState) -> None:
        await self._call("put", lambda s: s.put(key, state))

    async def update(self, key: str, change: Change) -> ConversationState:
        return await self._call("put", lambda s: s.update(key, change))

    async def aclose(self) -> None:
        try:
            await self._primary.aclose()
        finally:
            if self._fallback is not None:
                await self._fallback.aclose()

    async def _call(self, op: str, action: Callable[[StateStore], Awaitable[T]]) -> T:
        if not self._degraded or self._clock() >= self._retry_at:
            try:
                result = await action(self._primary)
            except StateStoreUnavailable:
                self._failed(op)
            else:
                if self._degraded:
                    self._recovered()
                return result
        if self._on_error == "closed" or self._fallback is None:
            raise StateStoreUnavailable("conversation state store is unreachable")
        return await action(self._fallback)

    def _failed(self, op: str) -> None:
        self._retry_at = self._clock() + self._retry_interval
        if self._metrics is not None:
            self._metrics.store_errors.labels(op=op).inc()
            self._metrics.store_degraded.set(1)
        if not self._degraded:
            self._degraded = True
            log.warning("state_store_degraded", op=op, on_store_error=self._on_error)

    def _recovered(self) -> None:
        self._degraded = False
        if self._metrics is not None:
            self._metrics.store_degraded.set(0)
        log.info("state_store_recovered")
