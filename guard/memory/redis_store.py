"""The shared state store: Redis via redis-py's asyncio client.

One string key per conversation holding the compact JSON state, with the TTL set on
every write.  Updates are optimistic transactions (WATCH the key, read, apply the
change in Python, MULTI/SET/EXEC, retry on conflict).  Why not a Lua script or a hash
per field: the change is a merge (bounded list of reply hashes, set of categories,
peak with its turn) that would have to be written twice, in Python for the in-memory
store and in Lua for Redis; and conflicts are rare (two requests of the same
conversation at the same instant), so the retry loop almost never runs.
"""

from __future__ import annotations

import asyncio
import random

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from guard.errors import StateStoreError, StateStoreUnavailable
from guard.memory.state import ConversationState, decode_for_update
from guard.memory.store import Change

KEY_PREFIX = "guard:conv:"
_MAX_CONFLICT_RETRIES = 32
_CONFLICT_BACKOFF_S = 0.001  # times the attempt number, jittered: spreads out writers


class RedisStore:
    """Conversation state in Redis, shared by every guard replica using ``url``."""

    def __init__(self, url: str, *, ttl_s: int, timeout_s: float = 0.25) -> None:
        self._ttl = ttl_s
        # No retries inside redis-py: the resilient wrapper decides what an outage
        # means (fall back or fail closed), and a request must not wait out backoffs.
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            retry_on_error=[],
            health_check_interval=0,
        )

    async def get(self, key: str) -> ConversationState | None:
        try:
            raw = await self._redis.get(KEY_PREFIX + key)
        except (RedisError, OSError) as exc:
            raise _translate(exc) from exc
        return None if raw is None else ConversationState.from_bytes(raw)

    async def put(self, key: str, state: ConversationState) -> None:
        try:
            await self._redis.set(KEY_PREFIX + key, state.to_bytes(), ex=self._ttl)
        except (RedisError, OSError) as exc:
            raise _translate(exc) from exc

    async def update(self, key: str, change: Change) -> ConversationState:
        name = KEY_PREFIX + key
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for attempt in range(_MAX_CONFLICT_RETRIES):
                    try:
                        await pipe.watch(name)
                        raw = await pipe.get(name)
                        current = decode_for_update(raw)
                        state = change(current)
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.set(name, state.to_bytes(), ex=self._ttl)
                        await pipe.execute()
                        return state
                    except WatchError:
                        # Another writer got there first: re-read and re-apply.
                        jitter = random.random()  # noqa: S311 - not for security
                        await asyncio.sleep(_CONFLICT_BACKOFF_S * attempt * jitter)
        except (RedisError, OSError) as exc:
            raise _translate(exc) from exc
        raise StateStoreError("conversation state update kept conflicting")

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise _translate(exc) from exc

    async def aclose(self) -> None:
        await self._redis.aclose()


def _translate(exc: Exception) -> StateStoreError:
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return StateStoreUnavailable("conversation state store is unreachable")
    return StateStoreError("conversation state store failed")
