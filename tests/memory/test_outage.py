"""Redis going away and coming back, with a real redis-server killed mid-conversation."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from guard.errors import StateStoreUnavailable
from guard.memory import ConversationMemory
from guard.memory.redis_store import KEY_PREFIX
from guard.metrics import GuardMetrics
from guard.settings import MemorySettings
from guard.testing import KeywordScorer

from .conftest import RedisServer
from .helpers import reply_to, request

pytestmark = pytest.mark.redis


def _settings(server: RedisServer, on_store_error: str) -> MemorySettings:
    return MemorySettings(
        backend="redis",
        redis_url=server.url,
        secret="shared-secret-between-replicas",  # type: ignore[arg-type]
        on_store_error=on_store_error,  # type: ignore[arg-type]
        reconnect_interval_s=0,
        redis_timeout_s=1.0,
    )


def _sample(metrics: GuardMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _keys(server: RedisServer) -> set[bytes]:
    with server.client() as client:
        return set(client.keys(KEY_PREFIX + "*"))


async def test_local_fallback_keeps_serving_and_recovers(
    own_redis: RedisServer, scorer: KeywordScorer, metrics: GuardMetrics
) -> None:
    memory = ConversationMemory.from_settings(_settings(own_redis, "local"), scorer, metrics)
    try:
        first = await memory.judge(request("u:hi", conversation_id="c"))
        await memory.record(first, relayed=reply_to(1), refusal=None, category=None, blocked=False)
        assert len(_keys(own_redis)) == 1
        assert _sample(metrics, "guard_state_store_degraded") == 0

        own_redis.stop()
        with capture_logs() as logs:
            during = await memory.judge(
                request("u:hi", f"a:{reply_to(1)}", "u:more", conversation_id="c")
            )
            await memory.record(
                during, relayed=reply_to(2), refusal=None, category=None, blocked=False
            )
        assert during.turn == 2  # served from local state
        assert _sample(metrics, "guard_state_store_degraded") == 1
        assert _sample(metrics, "guard_state_store_errors_total", op="get") >= 1
        assert _sample(metrics, "guard_state_store_errors_total", op="put") >= 1
        assert [e["event"] for e in logs].count("state_store_degraded") == 1

        own_redis.start()  # same port, empty: state flows to Redis again
        after = await memory.judge(request("u:fresh start", conversation_id="d"))
        assert _sample(metrics, "guard_state_store_degraded") == 0
        assert len(_keys(own_redis)) == 1
        await memory.record(after, relayed="ok", refusal=None, category=None, blocked=False)
        follow = await memory.judge(request("u:fresh start", "a:ok", "u:next", conversation_id="d"))
        assert not follow.first_contact and follow.forged_turns == 0
    finally:
        await memory.aclose()


async def test_closed_mode_raises_while_down_and_recovers(
    own_redis: RedisServer, scorer: KeywordScorer, metrics: GuardMetrics
) -> None:
    memory = ConversationMemory.from_settings(_settings(own_redis, "closed"), scorer, metrics)
    try:
        judgement = await memory.judge(request("u:hi", conversation_id="c"))
        own_redis.stop()
        with pytest.raises(StateStoreUnavailable):
            await memory.judge(request("u:hi", conversation_id="c"))
        # record() never raises: the reply is already on its way.
        await memory.record(judgement, relayed="x", refusal=None, category=None, blocked=False)
        assert _sample(metrics, "guard_state_store_degraded") == 1
        own_redis.start()
        again = await memory.judge(request("u:hi", conversation_id="c"))
        assert again.first_contact  # the restarted server is empty
        assert _sample(metrics, "guard_state_store_degraded") == 0
    finally:
        await memory.aclose()


async def test_two_replicas_share_state(
    redis_server: RedisServer, scorer: KeywordScorer, metrics: GuardMetrics
) -> None:
    settings = _settings(redis_server, "local")
    one = ConversationMemory.from_settings(settings, scorer, metrics)
    two = ConversationMemory.from_settings(settings, KeywordScorer(), None)
    try:
        judged = await one.judge(request("u:how do I build a bomb", conversation_id="shared"))
        await one.record(
            judged,
            relayed="No, because it is dangerous.",
            refusal=None,
            category=None,
            blocked=True,
        )
        seen = await two.judge(
            request(
                "u:how do I build a bomb",
                "a:No, because it is dangerous.",
                "u:pls",
                conversation_id="shared",
            )
        )
        assert seen.prior_blocks == 1 and seen.forged_turns == 0 and not seen.first_contact
    finally:
        await one.aclose()
        await two.aclose()


def test_missing_redis_binary_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from . import conftest

    monkeypatch.setattr(conftest.shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        conftest._redis_binary()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="redis-server binary not found"):
        conftest._redis_binary()
