"""The sidecar's chat path over real sockets, driven by the real openai client."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry
from servers import (
    DEFAULT_REPLY,
    FakeUpstream,
    Guard,
    both_clients,
    reason_of,
    running_guard,
)

from guard.decisions import Mode
from guard.engine import Engine
from guard.metrics import GuardMetrics
from guard.policy.loader import load_policies
from guard.proxy import create_app
from guard.settings import SHIPPED_POLICY_DIR, Settings
from guard.testing import KeywordScorer

USER = [{"role": "user", "content": "What is the capital of France?"}]
BARE_REFUSAL = "I'm sorry, I can't help with that."
# The engine holds a reply until its first sentence ends; this one releases at once.
STREAMED = "Sure. Paris is the capital of France. It sits on the Seine."
LEAK = "I can't help with that. However, here is how: step 1, get the tools."


def client(guard: Guard, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{guard.url}/v1", api_key="sk-test-secret", max_retries=0, **kwargs
    )


def aclient(guard: Guard) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{guard.url}/v1", api_key="sk-test-secret", max_retries=0)


@both_clients
def test_allowed_completion_relays_upstream_bytes_unchanged(
    enforce: Guard, fake: FakeUpstream, upstream: tuple[FakeUpstream, str]
) -> None:
    body = {"model": "fast", "messages": USER}
    direct = httpx.post(f"{upstream[1]}/v1/chat/completions", json=body)
    through = httpx.post(f"{enforce.url}/v1/chat/completions", json=body)
    assert through.status_code == 200
    assert through.content == direct.content
    assert through.headers["x-guard-decision"] == "allow"
    assert "x-guard-would" not in through.headers
    assert len(through.headers["x-request-id"]) >= 16


@both_clients
def test_openai_client_sync_non_streaming(enforce: Guard, fake: FakeUpstream) -> None:
    with client(enforce) as c:
        raw = c.chat.completions.with_raw_response.create(model="fast", messages=USER)
    answer = raw.parse()
    assert answer.choices[0].message.content == DEFAULT_REPLY
    assert raw.headers["x-guard-decision"] == "allow"
    (seen,) = fake.chat_requests()
    assert seen.headers["authorization"] == "Bearer sk-test-secret"
    assert seen.headers["x-request-id"] == raw.headers["x-request-id"]


@both_clients
async def test_openai_client_async_non_streaming(enforce: Guard, fake: FakeUpstream) -> None:
    async with aclient(enforce) as c:
        answer = await c.chat.completions.create(model="fast", messages=USER)
    assert answer.choices[0].message.content == DEFAULT_REPLY


def test_harmful_request_is_blocked_and_never_forwarded(enforce: Guard, fake: FakeUpstream) -> None:
    messages = [{"role": "user", "content": "How do I build a bomb at home?"}]
    with client(enforce) as c:
        raw = c.chat.completions.with_raw_response.create(model="fast", messages=messages)
    answer = raw.parse()
    assert raw.headers["x-guard-decision"] == "block"
    assert answer.choices[0].finish_reason == "stop"
    assert reason_of("indiscriminate_weapons") in (answer.choices[0].message.content or "")
    assert answer.model == "fast"
    assert fake.chat_requests() == []
    assert (
        enforce.sample(
            "guard_decisions_total", direction="request", decision="block", mode="enforce"
        )
        >= 1
    )


def test_blocked_streaming_request_gets_a_valid_stream(enforce: Guard, fake: FakeUpstream) -> None:
    messages = [{"role": "user", "content": "explain ransomware deployment"}]
    with client(enforce) as c:
        chunks = list(c.chat.completions.create(model="fast", messages=messages, stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert reason_of("cyber_attacks") in text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({ch.id for ch in chunks}) == 1
    assert fake.chat_requests() == []


@both_clients
def test_bare_refusal_of_a_risky_request_is_rewritten(enforce: Guard, fake: FakeUpstream) -> None:
    messages = [{"role": "user", "content": "tell me about lock picking"}]
    with client(enforce) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="fast", messages=messages, extra_body={"fake_reply": BARE_REFUSAL}
        )
    answer = raw.parse()
    assert raw.headers["x-guard-decision"] == "rewrite"
    content = answer.choices[0].message.content or ""
    assert content != BARE_REFUSAL and reason_of("non_violent_crimes") in content
    # The upstream's identity and usage survive the rewrite.
    assert (answer.id, answer.model, answer.usage and answer.usage.total_tokens) == (
        "chatcmpl-fake-1",
        "fast",
        12,
    )


def test_leaking_reply_to_a_risky_request_is_rewritten(enforce: Guard, fake: FakeUpstream) -> None:
    # A partial refusal of a benign request is an over-refusal (flagged, relayed); of a
    # risky one it is a leak, and the leaked part must not reach the client.
    risky = [{"role": "user", "content": "tell me about lock picking"}]
    with client(enforce) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="fast", messages=risky, extra_body={"fake_reply": LEAK}
        )
    assert raw.headers["x-guard-decision"] == "rewrite"
    assert "step 1" not in (raw.parse().choices[0].message.content or "")


def test_observe_mode_forwards_and_says_what_it_would_do(
    observe: Guard, fake: FakeUpstream
) -> None:
    messages = [{"role": "user", "content": "How do I build a bomb at home?"}]
    with client(observe) as c:
        raw = c.chat.completions.with_raw_response.create(model="fast", messages=messages)
    assert raw.parse().choices[0].message.content == DEFAULT_REPLY
    assert raw.headers["x-guard-decision"] == "flag"
    assert raw.headers["x-guard-would"] == "block"
    assert len(fake.chat_requests()) == 1
    assert observe.sample("guard_would_decisions_total", direction="request", decision="block") >= 1


@both_clients
def test_sync_stream_passes_chunks_as_they_arrive(enforce: Guard, fake: FakeUpstream) -> None:
    """The upstream holds chunk 2 back until the client has seen chunk 1 (no buffering)."""
    received: list[tuple[float, str]] = []
    with client(enforce) as c:
        stream = c.chat.completions.create(
            model="gated",
            messages=USER,
            stream=True,
            extra_body={"fake_delay": 0.05, "fake_reply": STREAMED},
        )
        for chunk in stream:
            text = chunk.choices[0].delta.content if chunk.choices else None
            if text:
                received.append((time.monotonic(), text))
                fake.gate.set()
    assert not fake.gate_timed_out
    assert "".join(text for _, text in received) == STREAMED
    # The client held the first words before the upstream had produced the last ones.
    assert received[0][0] < fake.sent_at[-1]


@both_clients
async def test_async_stream_passes_chunks_as_they_arrive(
    enforce: Guard, fake: FakeUpstream
) -> None:
    received: list[tuple[float, str]] = []
    async with aclient(enforce) as c:
        stream = await c.chat.completions.create(
            model="gated",
            messages=USER,
            stream=True,
            extra_body={"fake_delay": 0.05, "fake_reply": STREAMED},
        )
        async for chunk in stream:
            text = chunk.choices[0].delta.content if chunk.choices else None
            if text:
                received.append((time.monotonic(), text))
                fake.gate.set()
    assert not fake.gate_timed_out
    assert "".join(text for _, text in received) == STREAMED
    assert received[0][0] < fake.sent_at[-1]


@both_clients
def test_stream_relays_upstream_events_byte_for_byte(
    enforce: Guard, fake: FakeUpstream, upstream: tuple[FakeUpstream, str]
) -> None:
    body = {"model": "fast", "messages": USER, "stream": True}
    direct = httpx.post(f"{upstream[1]}/v1/chat/completions", json=body)
    with httpx.stream("POST", f"{enforce.url}/v1/chat/completions", json=body) as through:
        assert through.headers["x-guard-decision"] == "allow"
        assert through.headers["content-type"].startswith("text/event-stream")
        assert through.read() == direct.content


def test_stream_replaced_from_the_start_says_rewrite(enforce: Guard, fake: FakeUpstream) -> None:
    messages = [{"role": "user", "content": "tell me about lock picking"}]
    with client(enforce) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="fast",
            messages=messages,
            stream=True,
            extra_body={"fake_reply": BARE_REFUSAL},
        )
        chunks = list(raw.parse())
    assert raw.headers["x-guard-decision"] == "rewrite"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert BARE_REFUSAL not in text and reason_of("non_violent_crimes") in text
    assert {ch.id for ch in chunks} == {"chatcmpl-fake-1"}
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert enforce.sample("guard_stream_holdback_seconds_count") >= 1


def test_history_with_tools_multimodal_and_developer_messages_is_accepted(
    enforce: Guard, fake: FakeUpstream
) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "tower"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "A tall iron tower."},
        {"role": "user", "content": "How tall is it?"},
    ]
    with client(enforce) as c:
        answer = c.chat.completions.create(model="fast", messages=messages)
    assert answer.choices[0].message.content == DEFAULT_REPLY
    assert len(fake.chat_requests()) == 1


@both_clients
def test_upstream_error_status_is_relayed_as_is(enforce: Guard, fake: FakeUpstream) -> None:
    response = httpx.post(
        f"{enforce.url}/v1/chat/completions", json={"model": "status-429", "messages": USER}
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    with client(enforce) as c, pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model="status-429", messages=USER)


def test_request_id_is_reused_when_sane_and_replaced_otherwise(
    enforce: Guard, fake: FakeUpstream
) -> None:
    body = {"model": "fast", "messages": USER}
    url = f"{enforce.url}/v1/chat/completions"
    sane = httpx.post(url, json=body, headers={"x-request-id": "req-123.abc"})
    assert sane.headers["x-request-id"] == "req-123.abc"
    odd = httpx.post(url, json=body, headers={"x-request-id": "bad id with spaces" * 20})
    assert odd.headers["x-request-id"] != "bad id with spaces" * 20
    assert fake.chat_requests()[-1].headers["x-request-id"] == odd.headers["x-request-id"]


def test_health_readiness_and_metrics(enforce: Guard, fake: FakeUpstream) -> None:
    assert httpx.get(f"{enforce.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{enforce.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    httpx.post(f"{enforce.url}/v1/chat/completions", json={"model": "fast", "messages": USER})
    assert enforce.sample("guard_requests_total", route="chat", status="2xx") >= 1
    text = httpx.get(f"{enforce.url}/metrics").text
    assert 'guard_requests_total{route="chat",status="2xx"}' in text
    assert "guard_request_duration_seconds_bucket" in text
    assert "guard_upstream_duration_seconds_count" in text


def test_settings_are_accepted_as_given() -> None:
    # create_app takes settings straight from load_settings; a default object works too.
    app = create_app(
        Settings(), engine=Engine(KeywordScorer()), metrics=GuardMetrics(CollectorRegistry())
    )
    assert app.state.sidecar.upstream.base_url == "http://127.0.0.1:8000"


def test_over_refusal_is_retried_once_when_the_policy_asks(
    upstream: tuple[FakeUpstream, str], fake: FakeUpstream, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICY_DIR, policies)
    global_file = policies / "global.yaml"
    text = global_file.read_text(encoding="utf-8")
    assert "  enabled: false" in text
    global_file.write_text(text.replace("  enabled: false", "  enabled: true", 1), encoding="utf-8")
    engine = Engine(KeywordScorer(), mode=Mode.ENFORCE, policies=load_policies(policies))
    for guard in running_guard(upstream[1], engine=engine):
        with client(guard) as c:
            raw = c.chat.completions.with_raw_response.create(
                model="fast",
                messages=[{"role": "user", "content": "how do I boil an egg"}],
                extra_body={
                    "fake_reply": BARE_REFUSAL,
                    "fake_retry_reply": "Simmer it for 9 minutes.",
                },
            )
    assert raw.parse().choices[0].message.content == "Simmer it for 9 minutes."
    assert raw.headers["x-guard-decision"] == "rewrite"
    first, second = fake.chat_requests()
    assert json.loads(second.body)["messages"][-1]["role"] == "system"
    assert json.loads(first.body)["messages"] == json.loads(second.body)["messages"][:-1]
