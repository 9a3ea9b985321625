"""Real servers for transport tests: uvicorn in a thread, a fake upstream, a resetting socket.

The fake upstream is a small Starlette app that speaks enough of the OpenAI API to be
driven per request: the request's ``model`` picks a scenario and ``fake_reply`` (sent
with the openai client's ``extra_body``) the reply text.  It records every request it
sees, so a test can assert that nothing was forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from guard.decisions import Mode
from guard.engine import Engine
from guard.metrics import GuardMetrics
from guard.policy.loader import load_policies
from guard.proxy import create_app
from guard.settings import SHIPPED_POLICY_DIR, load_settings
from guard.testing import KeywordScorer


class Guard:
    """A running guard server and the metrics it records."""

    def __init__(self, url: str, metrics: GuardMetrics, engine: Engine) -> None:
        self.url = url
        self.metrics = metrics
        self.engine = engine

    def sample(self, name: str, **labels: str) -> float:
        """A metric's value once the server has accounted the request just answered.

        The guard counts a request after its last byte is sent, so the client can read
        the answer a moment before; poll briefly instead of racing.
        """
        deadline = time.monotonic() + 5
        while True:
            value = self.metrics.registry.get_sample_value(name, labels) or 0.0
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.01)


UPSTREAM_CLIENTS = ("native", "httpx")
# Runs a test once per upstream client (the guard fixtures take ``upstream_client``);
# module scope, so a module-scoped guard is started once per client, not per test.
both_clients = pytest.mark.parametrize(
    "upstream_client", UPSTREAM_CLIENTS, indirect=True, scope="module"
)


def running_guard(
    upstream_url: str,
    mode: Mode = Mode.ENFORCE,
    *,
    engine: Engine | None = None,
    overrides: dict[str, Any] | None = None,
    client: str = "native",
) -> Iterator[Guard]:
    """Start the sidecar on a free port in front of ``upstream_url`` (a generator fixture)."""
    merged: dict[str, Any] = {"upstream": {"url": upstream_url, "client": client}}
    for section, values in (overrides or {}).items():
        merged[section] = {**merged.get(section, {}), **values}
    settings = load_settings(overrides=merged, environ={})
    metrics = GuardMetrics(CollectorRegistry())
    engine = engine or Engine(KeywordScorer(), mode=mode)
    app = create_app(settings, engine=engine, metrics=metrics)
    with ServerThread(app) as server:
        yield Guard(server.url, metrics, engine)


DEFAULT_REPLY = "Paris is the capital of France. It sits on the Seine."


class ServerThread:
    """Serve an ASGI app with uvicorn on 127.0.0.1 and a free port, in a thread."""

    def __init__(self, app: Any, *, lifespan: str = "on") -> None:
        self._config = uvicorn.Config(
            app,
            lifespan=lifespan,
            log_level="warning",
            ws="none",
            server_header=False,
            timeout_graceful_shutdown=1,
            date_header=False,
        )
        self._server = uvicorn.Server(self._config)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)
        self._sock.close()


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    body_chunks: int


@dataclass
class FakeUpstream:
    """State shared between a test and the fake upstream app it runs."""

    seen: list[Seen] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    partial: threading.Event = field(default_factory=threading.Event)  # a body began
    gate_timed_out: bool = False
    sent_at: list[float] = field(default_factory=list)  # monotonic time of each chunk sent

    def chat_requests(self) -> list[Seen]:
        return [s for s in self.seen if s.path.endswith("/chat/completions")]

    def reset(self) -> None:
        self.seen.clear()
        self.gate.clear()
        self.partial.clear()
        self.gate_timed_out = False
        self.sent_at.clear()


def completion_payload(text: str, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
    payload = {
        "id": "chatcmpl-fake-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def stream_pieces(text: str) -> list[str]:
    """Split a reply into word-sized deltas (spaces kept) like a model would stream it."""
    words = text.split(" ")
    return [word + (" " if i < len(words) - 1 else "") for i, word in enumerate(words)]


def fake_upstream_app(state: FakeUpstream) -> Starlette:
    async def record(request: Request) -> tuple[bytes, int]:
        chunks = []
        async for chunk in request.stream():
            if chunk:
                state.partial.set()
            chunks.append(chunk)
        body = b"".join(chunks)
        state.seen.append(
            Seen(
                request.method,
                request.url.path,
                request.url.query,
                {k.lower(): v for k, v in request.headers.items()},
                body,
                sum(1 for c in chunks if c),
            )
        )
        return body, len(chunks)

    async def chat(request: Request) -> Response:
        body, _ = await record(request)
        data = json.loads(body)
        model = data.get("model", "fast")
        text = data.get("fake_reply", DEFAULT_REPLY)
        if data["messages"][-1].get("role") == "system" and "fake_retry_reply" in data:
            text = data["fake_retry_reply"]  # the guard asked again, with a clarification
        delay = float(data.get("fake_delay", 0))
        if model == "status-429":
            return JSONResponse(
                {
                    "error": {
                        "message": "slow down",
                        "type": "rate_limit",
                        "param": None,
                        "code": "rate_limit_exceeded",
                    }
                },
                status_code=429,
                headers={"retry-after": "7"},
            )
        if model == "not-json":
            return Response(b"<html>oops</html>", media_type="text/html")
        if model == "hang":
            await asyncio.sleep(5)
        replies = data.get("fake_replies")  # one text per choice (the request's n)
        if replies and not data.get("stream"):
            payload = completion_payload(replies[0], model)
            payload["choices"] = [
                {**payload["choices"][0], "index": i, "message": {"role": "assistant",
                 "content": reply, "refusal": None}}
                for i, reply in enumerate(replies)
            ]  # fmt: skip
            return JSONResponse(payload)
        reasoning = data.get("fake_reasoning")  # a chain of thought beside the answer
        if not data.get("stream"):
            payload = completion_payload(text, model)
            if reasoning:
                payload["choices"][0]["message"]["reasoning_content"] = reasoning
            return JSONResponse(payload)

        async def choice_events() -> AsyncIterator[bytes]:
            # Choices interleaved word by word, as servers stream n > 1.
            pieces = [stream_pieces(reply) for reply in replies]
            for index in range(len(replies)):
                yield _chunk(model, {"role": "assistant", "content": ""}, index=index)
            for step in range(max(len(p) for p in pieces)):
                for index, words in enumerate(pieces):
                    if step < len(words):
                        yield _chunk(model, {"content": words[step]}, index=index)
            for index in range(len(replies)):
                yield _chunk(model, {}, "stop", index=index)
            yield b"data: [DONE]\n\n"

        if replies:
            return StreamingResponse(choice_events(), media_type="text/event-stream")

        async def events() -> AsyncIterator[bytes]:
            yield _chunk(model, {"role": "assistant", "content": ""})
            for piece in stream_pieces(reasoning or ""):
                if piece:
                    yield _chunk(model, {"reasoning_content": piece, "content": None})
            for index, piece in enumerate(stream_pieces(text)):
                if index == 1 and model == "gated":
                    # Wait until the client has seen the first text chunk: a buffering
                    # guard would deadlock here, so the wait is bounded and recorded.
                    passed = await asyncio.to_thread(state.gate.wait, 10)
                    state.gate_timed_out = not passed
                if index == 3 and model == "break-midway":
                    raise RuntimeError("upstream died mid-stream")
                state.sent_at.append(time.monotonic())
                yield _chunk(model, {"content": piece})
                if delay:
                    await asyncio.sleep(delay)
            yield _chunk(model, {}, "stop")
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        await record(request)
        return JSONResponse(
            {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "test"}]},
            headers={"x-upstream": "fake", "cache-control": "max-age=5"},
        )

    async def embeddings(request: Request) -> Response:
        body, _ = await record(request)
        return JSONResponse(
            {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)},
        )

    async def set_cookie(request: Request) -> Response:
        await record(request)
        response = PlainTextResponse("cookie set")
        response.set_cookie("session", "user-a-secret")
        return response

    async def slow_download(request: Request) -> Response:
        await record(request)

        async def pieces() -> AsyncIterator[bytes]:
            yield b"first;"
            passed = await asyncio.to_thread(state.gate.wait, 10)
            state.gate_timed_out = not passed
            yield b"second;"

        return StreamingResponse(pieces(), media_type="application/octet-stream")

    async def anything(request: Request) -> Response:
        body, _ = await record(request)
        return Response(
            f"{request.method} {request.url.path}?{request.url.query} {len(body)}".encode(),
            status_code=418,
            headers={"x-teapot": "yes"},
            media_type="text/plain",
        )

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/slow-download", slow_download, methods=["GET"]),
            Route("/v1/set-cookie", set_cookie, methods=["GET"]),
            Route("/{path:path}", anything, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        ]
    )


class ResettingServer:
    """Accepts connections and resets them at once (SO_LINGER 0): a dying upstream."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        import struct

        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                conn.recv(65536)
            conn.close()

    def __enter__(self) -> ResettingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


def closed_port_url() -> str:
    """A URL on which nothing listens (connection refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def completion_text(parsed: Any, stream: bool) -> str:
    """The reply text of an ``openai`` completion, whole or consumed as a stream."""
    if stream:
        return "".join(chunk.choices[0].delta.content or "" for chunk in parsed if chunk.choices)
    return str(parsed.choices[0].message.content or "")


def reason_of(category: str) -> str:
    """The shipped policy's reason for ``category``: the guard's refusals must say it."""
    return load_policies(SHIPPED_POLICY_DIR).categories[category].reason
