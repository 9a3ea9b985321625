"""Everything that is not a chat completion passes through the sidecar untouched."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import structlog
from servers import (
    FakeUpstream,
    Guard,
    ServerThread,
    both_clients,
    fake_upstream_app,
    running_guard,
)

from guard.decisions import Mode


@pytest.fixture(scope="module")
def guard(upstream: tuple[FakeUpstream, str], upstream_client: str) -> Iterator[Guard]:
    yield from running_guard(upstream[1], Mode.ENFORCE, client=upstream_client)


@both_clients
def test_models_pass_through_with_status_headers_and_bytes(
    guard: Guard, fake: FakeUpstream, upstream: tuple[FakeUpstream, str]
) -> None:
    direct = httpx.get(f"{upstream[1]}/v1/models")
    through = httpx.get(f"{guard.url}/v1/models", headers={"authorization": "Bearer sk-xyz"})
    assert through.status_code == 200
    assert through.content == direct.content
    assert through.headers["x-upstream"] == "fake"
    assert through.headers["cache-control"] == "max-age=5"
    assert "x-guard-decision" not in through.headers  # nothing was judged
    assert fake.seen[-1].headers["authorization"] == "Bearer sk-xyz"


@both_clients
def test_openai_client_lists_models_through_the_guard(guard: Guard, fake: FakeUpstream) -> None:
    with openai.OpenAI(base_url=f"{guard.url}/v1", api_key="sk-a", max_retries=0) as client:
        assert [model.id for model in client.models.list()] == ["fake"]


@both_clients
def test_cookies_reach_the_client_and_are_never_kept_by_the_guard(
    guard: Guard, fake: FakeUpstream
) -> None:
    first = httpx.get(f"{guard.url}/v1/set-cookie")
    assert "user-a-secret" in first.headers["set-cookie"]
    httpx.get(f"{guard.url}/v1/models")  # another user, no cookie of their own
    assert "cookie" not in fake.seen[-1].headers


@both_clients
def test_hop_by_hop_request_headers_are_not_forwarded(guard: Guard, fake: FakeUpstream) -> None:
    headers = {
        "connection": "keep-alive, x-hop-only",
        "x-hop-only": "1",
        "keep-alive": "timeout=5",
        "proxy-authorization": "Basic c2VjcmV0",
        "x-end-to-end": "kept",
    }
    httpx.get(f"{guard.url}/v1/models", headers=headers)
    seen = fake.seen[-1].headers
    assert seen["x-end-to-end"] == "kept"
    for name in ("x-hop-only", "keep-alive", "proxy-authorization"):
        assert name not in seen


@both_clients
def test_unknown_path_method_query_and_status_pass_through(
    guard: Guard, fake: FakeUpstream
) -> None:
    response = httpx.put(f"{guard.url}/some/where?x=1&y=%20z", content=b"abc")
    assert response.status_code == 418
    assert response.headers["x-teapot"] == "yes"
    assert response.text == "PUT /some/where?x=1&y=%20z 3"
    assert fake.seen[-1].query == "x=1&y=%20z"


@both_clients
def test_head_request_gets_headers_only_and_the_connection_stays_usable(
    guard: Guard, fake: FakeUpstream
) -> None:
    with httpx.Client() as client:
        head = client.head(f"{guard.url}/v1/models")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["x-upstream"] == "fake"
        for _ in range(3):  # the pooled upstream connection is not confused by the HEAD
            assert client.get(f"{guard.url}/v1/models").json()["data"][0]["id"] == "fake"


def test_get_on_the_chat_path_is_not_judged(guard: Guard, fake: FakeUpstream) -> None:
    response = httpx.get(f"{guard.url}/v1/chat/completions")
    assert response.status_code == 418  # the upstream's catch-all answered, relayed
    assert "x-guard-decision" not in response.headers
    assert fake.seen[-1].method == "GET"


@both_clients
def test_embeddings_body_reaches_upstream_intact(guard: Guard, fake: FakeUpstream) -> None:
    import hashlib

    body = bytes(range(256)) * 4096  # 1 MiB, over the chat body limit on purpose
    response = httpx.post(f"{guard.url}/v1/embeddings", content=body)
    assert response.json() == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}
    seen = fake.seen[-1].headers
    assert seen["content-length"] == str(len(body)) and "transfer-encoding" not in seen


@both_clients
def test_request_body_streams_to_the_upstream(guard: Guard, fake: FakeUpstream) -> None:
    """The second half of the body is only produced once the upstream has the first."""
    gate_timed_out = []

    def body() -> Iterator[bytes]:
        yield b"first-half;"
        fake.gate.clear()
        # The fake records a request only when the whole body arrived; watch the
        # upstream's side instead through a request that must already be in flight.
        gate_timed_out.append(not _wait_for_partial(fake))
        yield b"second-half"

    response = httpx.post(f"{guard.url}/v1/streamed-upload", content=body())
    assert gate_timed_out == [False]
    assert response.status_code == 418
    assert response.text.endswith(f" {len(b'first-half;second-half')}")


def _wait_for_logs(logs: list[dict[str, object]], count: int) -> list[dict[str, object]]:
    # Each request is logged just after its last byte went out: poll, do not race.
    deadline = time.monotonic() + 5
    while True:
        completed = [entry for entry in logs if entry["event"] == "request_completed"]
        if len(completed) >= count or time.monotonic() > deadline:
            return completed
        time.sleep(0.01)


def _wait_for_partial(fake: FakeUpstream) -> bool:
    return fake.partial.wait(10)


@both_clients
def test_response_body_streams_to_the_client(guard: Guard, fake: FakeUpstream) -> None:
    with httpx.stream("GET", f"{guard.url}/v1/slow-download") as response:
        pieces = response.iter_raw()
        assert next(pieces) == b"first;"
        fake.gate.set()  # the upstream sends the rest only now
        assert b"".join(pieces) == b"second;"
    assert not fake.gate_timed_out


def test_upstream_path_prefix_is_kept() -> None:
    state = FakeUpstream()
    with ServerThread(fake_upstream_app(state), lifespan="off") as server:
        for guard in running_guard(f"{server.url}/prefix/", Mode.OBSERVE):
            response = httpx.get(f"{guard.url}/v1/models?a=b")
    assert response.text == "GET /prefix/v1/models?a=b 0"


def test_logs_carry_no_credentials_and_no_text(guard: Guard, fake: FakeUpstream) -> None:
    secret = "sk-never-log-this"
    prompt = "a very particular prompt about turnips"
    with structlog.testing.capture_logs() as logs:
        httpx.get(f"{guard.url}/v1/models", headers={"authorization": f"Bearer {secret}"})
        httpx.post(
            f"{guard.url}/v1/chat/completions",
            headers={"authorization": f"Bearer {secret}"},
            json={"model": "fast", "messages": [{"role": "user", "content": prompt}]},
        )
        completed = _wait_for_logs(logs, 2)
    assert {entry["route"] for entry in completed} >= {"chat", "passthrough"}
    text = repr(logs)
    assert secret not in text
    assert "turnips" not in text
    assert "Paris" not in text
