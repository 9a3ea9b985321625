"""The state-store contract, run against the in-memory store and a real Redis."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from guard.errors import StateStoreError
from guard.memory.memory_store import ENTRY_OVERHEAD, MemoryStore
from guard.memory.redis_store import KEY_PREFIX, RedisStore
from guard.memory.state import MAX_RELAYED, ConversationState
from guard.memory.store import StateStore
from guard.metrics import GuardMetrics

from .conftest import Clock, RedisServer

STATE = ConversationState(
    user_turns=3,
    relayed=("a" * 16, "b" * 16),
    peak_risk=0.61,
    peak_turn=2,
    peak_category="hate",
    refusals=1,
    blocks=2,
    refused_categories=("hate", "privacy"),
    escalated=True,
    updated_at=12.5,
)


def test_state_round_trips_compactly() -> None:
    raw = STATE.to_bytes()
    assert ConversationState.from_bytes(raw) == STATE
    assert len(ConversationState().to_bytes()) < 32


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b'{"v": 99, "n": 1}', b'{"v": 1}'])
def test_unreadable_state_is_a_store_error(raw: bytes) -> None:
    with pytest.raises(StateStoreError):
        ConversationState.from_bytes(raw)


def test_relayed_hashes_are_bounded_newest_kept() -> None:
    state = ConversationState()
    for i in range(MAX_RELAYED + 10):
        state = state.with_relayed(f"{i:016x}")
    assert len(state.relayed) == MAX_RELAYED
    assert state.relayed[-1] == f"{MAX_RELAYED + 9:016x}"
    assert state.with_relayed(state.relayed[-1]) is state


async def test_missing_key_is_none(store: StateStore) -> None:
    assert await store.get("t:nothing") is None


async def test_put_then_get(store: StateStore) -> None:
    await store.put("t:c", STATE)
    assert await store.get("t:c") == STATE
    assert await store.get("other:c") is None


async def test_update_applies_change_to_current(store: StateStore) -> None:
    seen: list[ConversationState | None] = []

    def bump(current: ConversationState | None) -> ConversationState:
        seen.append(current)
        return replace(current or ConversationState(), refusals=(current or STATE).refusals + 1)

    first = await store.update("t:u", bump)
    second = await store.update("t:u", bump)
    assert seen[0] is None
    assert first.refusals == 2 and second.refusals == 3
    assert await store.get("t:u") == second


async def test_concurrent_updates_lose_nothing(store: StateStore) -> None:
    def bump(current: ConversationState | None) -> ConversationState:
        state = current or ConversationState()
        return replace(state, refusals=state.refusals + 1)

    await asyncio.gather(*(store.update("t:race", bump) for _ in range(25)))
    state = await store.get("t:race")
    assert state is not None and state.refusals == 25


async def test_memory_store_expires_after_ttl(clock: Clock, metrics: GuardMetrics) -> None:
    store = MemoryStore(ttl_s=60, max_conversations=10, max_bytes=1 << 20, clock=clock)
    await store.put("t:c", STATE)
    clock.now += 59
    assert await store.get("t:c") == STATE
    clock.now += 2
    assert await store.get("t:c") is None
    assert len(store) == 0


async def test_memory_store_evicts_least_recently_used(metrics: GuardMetrics) -> None:
    store = MemoryStore(ttl_s=60, max_conversations=3, max_bytes=1 << 20, metrics=metrics)
    for name in "abc":
        await store.put(f"t:{name}", STATE)
    await store.get("t:a")  # a is now the most recently used
    await store.put("t:d", STATE)
    assert await store.get("t:b") is None
    assert all([await store.get(f"t:{n}") for n in "acd"])
    assert metrics.registry.get_sample_value("guard_conversations") == 3


async def test_memory_store_keeps_its_byte_bound() -> None:
    entry = len(STATE.to_bytes()) + len("t:00000") + ENTRY_OVERHEAD
    store = MemoryStore(ttl_s=60, max_conversations=1000, max_bytes=entry * 5)
    for i in range(50):
        await store.put(f"t:{i:05d}", STATE)
    assert len(store) == 5
    assert store.approx_bytes <= entry * 5
    assert await store.get("t:00049") == STATE


@pytest.mark.redis
async def test_redis_store_sets_ttl_on_every_write(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, ttl_s=120, timeout_s=2.0)
    try:
        await store.put("t:ttl", STATE)
        with redis_server.client() as client:
            assert 0 < client.ttl(KEY_PREFIX + "t:ttl") <= 120
            client.expire(KEY_PREFIX + "t:ttl", 5)
            await store.update("t:ttl", lambda current: current or STATE)
            assert client.ttl(KEY_PREFIX + "t:ttl") > 5
            raw = client.get(KEY_PREFIX + "t:ttl")
        assert isinstance(raw, bytes) and b"hate" in raw  # categories, hashes: no text
    finally:
        await store.aclose()


async def test_unreadable_state_is_replaced_on_update(store: StateStore) -> None:
    # An entry from another version (or corrupted) must not block the conversation's
    # records for its whole TTL: reads report it, the next update starts afresh.
    if isinstance(store, MemoryStore):
        store._items["t:bad"] = (float("inf"), b"{not json")
    else:
        assert isinstance(store, RedisStore)
        await store._redis.set(KEY_PREFIX + "t:bad", b"{not json")
    with pytest.raises(StateStoreError):
        await store.get("t:bad")
    state = await store.update("t:bad", lambda current: current or STATE)
    assert state == STATE and await store.get("t:bad") == STATE
