"""Bad input, failing upstreams and failing engines: clean errors, nothing forwarded, no crash."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from servers import (
    FakeUpstream,
    Guard,
    ResettingServer,
    both_clients,
    closed_port_url,
    running_guard,
)

from guard.decisions import GuardRequest, Mode, RequestVerdict, StreamStep
from guard.engine import Engine, ReplyStream
from guard.testing import KeywordScorer

USER = [{"role": "user", "content": "hello there"}]
LIMIT = 4096


@pytest.fixture(scope="module")
def guard(upstream: tuple[FakeUpstream, str], upstream_client: str) -> Iterator[Guard]:
    overrides = {"server": {"max_body_bytes": LIMIT}, "upstream": {"read_timeout_s": 1.0}}
    yield from running_guard(upstream[1], Mode.ENFORCE, overrides=overrides, client=upstream_client)


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert response.headers["x-request-id"]
    return dict(error)


def body(**fields: Any) -> bytes:
    return json.dumps({"model": "fast", "messages": USER, **fields}).encode()


BAD_BODIES = [
    (b"{", "invalid_json", None),
    (b"\xff\xfe not utf-8", "invalid_json", None),
    (b"[1, 2]", "invalid_value", None),
    (json.dumps({"model": "fast"}).encode(), "invalid_value", "messages"),
    (body(messages="hi"), "invalid_value", "messages"),
    (body(messages=[]), "invalid_value", "messages"),
    (body(messages=["hi"]), "invalid_value", "messages[0]"),
    (body(messages=[{"content": "hi"}]), "invalid_value", "messages[0].role"),
    (body(messages=[{"role": "wizard", "content": "hi"}]), "invalid_value", "messages[0].role"),
    (body(messages=[{"role": "user", "content": 5}]), "invalid_value", "messages[0].content"),
    (body(messages=[{"role": "user", "content": [5]}]), "invalid_value", "messages[0].content[0]"),
    (body(messages=[{"role": "assistant", "tool_calls": {}}]), "invalid_value",
     "messages[0].tool_calls"),
    (body(stream="yes"), "invalid_value", "stream"),
    (body(model=5), "invalid_value", "model"),
]  # fmt: skip


@pytest.mark.parametrize(("payload", "code", "param"), BAD_BODIES)
def test_bad_request_is_refused_and_not_forwarded(
    guard: Guard, fake: FakeUpstream, payload: bytes, code: str, param: str | None
) -> None:
    response = httpx.post(
        f"{guard.url}/v1/chat/completions",
        content=payload,
        headers={"content-type": "application/json"},
    )
    error = assert_openai_error(response, 400, code)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert fake.seen == []


def test_openai_client_sees_a_bad_request_error(guard: Guard, fake: FakeUpstream) -> None:
    with (
        openai.OpenAI(base_url=f"{guard.url}/v1", api_key="k", max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        client.chat.completions.create(model="fast", messages=[])
    assert caught.value.code == "invalid_value"
    assert fake.seen == []


def test_non_json_content_type_is_415(guard: Guard, fake: FakeUpstream) -> None:
    response = httpx.post(
        f"{guard.url}/v1/chat/completions", content=body(), headers={"content-type": "text/plain"}
    )
    assert_openai_error(response, 415, "unsupported_media_type")
    assert fake.seen == []


def test_declared_oversize_body_is_413(guard: Guard, fake: FakeUpstream) -> None:
    padded = body(padding="x" * LIMIT)
    response = httpx.post(
        f"{guard.url}/v1/chat/completions",
        content=padded,
        headers={"content-type": "application/json"},
    )
    assert_openai_error(response, 413, "body_too_large")
    assert fake.seen == []


def test_chunked_oversize_body_is_refused_before_it_ends(guard: Guard, fake: FakeUpstream) -> None:
    """Over the limit mid-body: 413 comes back while the client has not finished sending."""
    port = int(guard.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            b"content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 1500
        for _ in range(3):  # 4500 bytes > LIMIT, and no terminating chunk is ever sent
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"body_too_large" in head or b"content-length" in head
    assert fake.seen == []


@both_clients
def test_upstream_refusing_connections_is_502(upstream_client: str) -> None:
    for guard in running_guard(closed_port_url(), client=upstream_client):
        response = httpx.post(f"{guard.url}/v1/chat/completions", content=body())
        assert_openai_error(response, 502, "upstream_unavailable")
        passthrough = httpx.get(f"{guard.url}/v1/models")
        assert_openai_error(passthrough, 502, "upstream_unavailable")
        assert httpx.get(f"{guard.url}/readyz").status_code == 503
        assert guard.sample("guard_upstream_errors_total", kind="unavailable") >= 2


@both_clients
def test_upstream_resetting_connections_is_502(upstream_client: str) -> None:
    with ResettingServer() as server:
        for guard in running_guard(server.url, client=upstream_client):
            response = httpx.post(f"{guard.url}/v1/chat/completions", content=body())
            assert_openai_error(response, 502, "upstream_unavailable")


@both_clients
def test_upstream_timeout_is_504(guard: Guard, fake: FakeUpstream) -> None:
    response = httpx.post(f"{guard.url}/v1/chat/completions", content=body(model="hang"))
    assert_openai_error(response, 504, "upstream_timeout")
    assert guard.sample("guard_upstream_errors_total", kind="timeout") >= 1


@both_clients
def test_upstream_non_json_completion_is_502(guard: Guard, fake: FakeUpstream) -> None:
    response = httpx.post(f"{guard.url}/v1/chat/completions", content=body(model="not-json"))
    assert_openai_error(response, 502, "upstream_bad_response")


@both_clients
def test_stream_breaking_midway_ends_cleanly(guard: Guard, fake: FakeUpstream) -> None:
    reply = "Sure. One two three four five six."
    payload = body(model="break-midway", stream=True, fake_reply=reply)
    with httpx.stream(
        "POST", f"{guard.url}/v1/chat/completions", content=payload, timeout=10
    ) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    last = json.loads(events[-1].removeprefix("data: "))
    assert last["error"]["code"] == "upstream_unavailable"
    with (
        openai.OpenAI(base_url=f"{guard.url}/v1", api_key="k", max_retries=0, timeout=10) as client,
        pytest.raises(openai.APIError),
    ):
        for _ in client.chat.completions.create(
            model="break-midway", messages=USER, stream=True, extra_body={"fake_reply": reply}
        ):
            pass


class ExplodingEngine(Engine):
    """An engine with a bug: the guard must answer 500, log it, and keep serving."""

    def __init__(self, where: str) -> None:
        super().__init__(KeywordScorer(), mode=Mode.ENFORCE)
        self.where = where

    async def check_request(self, request: GuardRequest) -> RequestVerdict:
        if self.where == "request" and "explode" in request.conversation.last_user_text:
            raise RuntimeError("engine bug")
        return await super().check_request(request)

    def open_stream(self, request: GuardRequest, verdict: RequestVerdict) -> ReplyStream:
        stream = super().open_stream(request, verdict)
        if self.where == "stream":

            async def broken(delta: str) -> StreamStep:
                raise RuntimeError("engine bug mid-stream")

            stream.feed = broken  # type: ignore[method-assign]
        return stream


def test_engine_failure_is_500_and_the_guard_keeps_serving(
    upstream: tuple[FakeUpstream, str],
) -> None:
    for guard in running_guard(upstream[1], engine=ExplodingEngine("request")):
        bad = [{"role": "user", "content": "please explode"}]
        response = httpx.post(f"{guard.url}/v1/chat/completions", content=body(messages=bad))
        error = assert_openai_error(response, 500, "internal_error")
        assert "engine bug" not in error["message"]
        ok = httpx.post(f"{guard.url}/v1/chat/completions", content=body())
        assert ok.status_code == 200


def test_engine_failure_mid_stream_ends_the_stream(upstream: tuple[FakeUpstream, str]) -> None:
    for guard in running_guard(upstream[1], engine=ExplodingEngine("stream")):
        response = httpx.post(f"{guard.url}/v1/chat/completions", content=body(stream=True))
        assert_openai_error(response, 500, "internal_error")


def _fuzz_bodies(rng: random.Random) -> Iterator[bytes]:
    valid = body()
    yield b"[" * 200_000 + b"]" * 200_000
    yield b'{"messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    yield json.dumps({"messages": [{"role": "user", "content": "\ud800 lone"}]}).encode()
    yield b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}'
    yield json.dumps({"messages": [{"role": "user", "content": [{"type": "text"}]}]}).encode()
    yield json.dumps({"messages": [{"role": "user", "content": None}], "stream": None}).encode()
    yield b"null"
    yield b""
    for _ in range(60):
        yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    for _ in range(60):
        mutated = bytearray(valid)
        for _ in range(rng.randrange(1, 6)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        yield bytes(mutated)


def test_no_input_crashes_the_guard(guard: Guard, fake: FakeUpstream) -> None:
    rng = random.Random(1234)
    statuses: set[int] = set()
    with httpx.Client(timeout=10) as client:
        for payload in _fuzz_bodies(rng):
            response = client.post(
                f"{guard.url}/v1/chat/completions",
                content=payload,
                headers={"content-type": "application/json"},
            )
            statuses.add(response.status_code)
            assert response.status_code < 500, (payload[:80], response.text)
            if response.status_code >= 400:
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert 400 in statuses or 413 in statuses
    assert httpx.get(f"{guard.url}/healthz").status_code == 200
