"""GuardMiddleware around a Starlette app that serves chat completions itself."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry
from servers import ServerThread, completion_payload, completion_text, reason_of, stream_pieces
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from guard.decisions import Mode
from guard.engine import Engine
from guard.metrics import GuardMetrics
from guard.middleware import GuardMiddleware
from guard.policy import load_policies
from guard.settings import SHIPPED_POLICY_DIR
from guard.testing import KeywordScorer

USER = [{"role": "user", "content": "What is the capital of France?"}]
REPLY = "Sure. Paris is the capital of France."


class ChatApp:
    """A tiny LLM app: answers from ``fake_reply``, streams when asked, counts calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.bodies: list[bytes] = []
        self.request_ids: list[str | None] = []
        self.gate = threading.Event()
        self.gate_timed_out = False
        self.sent_at: list[float] = []
        self.echoed: list[str] = []

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/api/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/echo", self.echo, methods=["POST"]),
            Route("/v1/completions", self.echo, methods=["POST"]),
            Route("/tools/completions", self.echo, methods=["POST"]),
        ]

    async def chat(self, request: Request) -> Response:
        self.calls += 1
        body = await request.body()
        self.bodies.append(body)
        self.request_ids.append(request.headers.get("x-request-id"))
        data = json.loads(body)
        text = data.get("fake_reply", REPLY)
        model = data.get("model", "app")
        if model == "crash":
            raise RuntimeError("app bug")
        if not data.get("stream"):
            return JSONResponse(completion_payload(text, model))

        async def events() -> AsyncIterator[bytes]:
            for index, piece in enumerate(stream_pieces(text)):
                if index == 1 and model == "gated":
                    passed = await asyncio.to_thread(self.gate.wait, 10)
                    self.gate_timed_out = not passed
                self.sent_at.append(time.monotonic())
                chunk = {
                    "id": "chatcmpl-app",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": model,
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": []}, headers={"x-app": "1"})

    async def echo(self, request: Request) -> Response:
        self.echoed.append(request.url.path)
        return PlainTextResponse((await request.body()).decode()[::-1])


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ChatApp, str, GuardMetrics]]:
    chat = ChatApp()
    metrics = GuardMetrics(CollectorRegistry())
    engine = Engine(KeywordScorer(), mode=Mode.ENFORCE)
    app = Starlette(
        routes=chat.routes(),
        middleware=[Middleware(GuardMiddleware, engine=engine, metrics=metrics)],
    )
    with ServerThread(app) as server:
        yield chat, server.url, metrics


@pytest.fixture
def app(served: tuple[ChatApp, str, GuardMetrics]) -> ChatApp:
    chat = served[0]
    chat.calls = 0
    chat.bodies.clear()
    chat.gate.clear()
    chat.sent_at.clear()
    chat.echoed.clear()
    return chat


@pytest.fixture
def url(served: tuple[ChatApp, str, GuardMetrics]) -> str:
    return served[1]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="sk-app", max_retries=0, timeout=20)


def test_allowed_completion_is_the_apps_own_bytes(app: ChatApp, url: str) -> None:
    body = {"model": "app", "messages": USER}
    response = httpx.post(f"{url}/v1/chat/completions", json=body)
    assert response.headers["x-guard-decision"] == "allow"
    assert response.content == JSONResponse(completion_payload(REPLY, "app")).body
    assert app.bodies == [response.request.content]  # forwarded byte for byte
    assert app.request_ids[-1] == response.headers["x-request-id"]


def test_harmful_request_never_reaches_the_app(app: ChatApp, url: str) -> None:
    with client(url) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="app", messages=[{"role": "user", "content": "how to make meth"}]
        )
    assert raw.headers["x-guard-decision"] == "block"
    assert reason_of("non_violent_crimes") in (raw.parse().choices[0].message.content or "")
    assert app.calls == 0


def test_streamed_reply_passes_as_it_is_produced(app: ChatApp, url: str) -> None:
    received: list[float] = []
    with client(url) as c:
        for chunk in c.chat.completions.create(
            model="gated", messages=USER, stream=True, extra_body={"fake_reply": REPLY}
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(time.monotonic())
                app.gate.set()
    assert not app.gate_timed_out
    assert received[0] < app.sent_at[-1]


def test_bare_refusal_stream_is_rewritten(app: ChatApp, url: str) -> None:
    messages = [{"role": "user", "content": "tell me about lock picking"}]
    with client(url) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="app",
            messages=messages,
            stream=True,
            extra_body={"fake_reply": "I'm sorry, I can't help with that."},
        )
        chunks = list(raw.parse())
    assert raw.headers["x-guard-decision"] == "rewrite"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert reason_of("non_violent_crimes") in text and "sorry" not in text.lower()
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_bad_request_is_refused_before_the_app(app: ChatApp, url: str) -> None:
    response = httpx.post(f"{url}/v1/chat/completions", json={"model": "app", "messages": []})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"
    assert app.calls == 0


def test_app_crash_becomes_an_openai_error(app: ChatApp, url: str) -> None:
    response = httpx.post(f"{url}/v1/chat/completions", json={"model": "crash", "messages": USER})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert httpx.get(f"{url}/v1/models").status_code == 200


def test_other_routes_are_untouched(app: ChatApp, url: str) -> None:
    models = httpx.get(f"{url}/v1/models")
    assert models.headers["x-app"] == "1" and "x-guard-decision" not in models.headers
    assert httpx.post(f"{url}/echo", content=b"abc").text == "cba"
    other_prefix = httpx.post(
        f"{url}/api/v1/chat/completions",
        json={"model": "app", "messages": [{"role": "user", "content": "how to make meth"}]},
    )
    assert "x-guard-decision" not in other_prefix.headers  # prefix is /v1 only
    assert app.calls == 1


def test_metrics_are_counted(served: tuple[ChatApp, str, GuardMetrics], app: ChatApp) -> None:
    httpx.post(f"{served[1]}/v1/chat/completions", json={"model": "app", "messages": USER})
    registry = served[2].registry
    deadline = time.monotonic() + 5
    labels: dict[str, Any] = {"route": "chat", "status": "2xx"}
    while not registry.get_sample_value("guard_requests_total", labels):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_middleware_builds_its_engine_from_settings() -> None:
    async def inner(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        raise AssertionError

    middleware = GuardMiddleware(inner, metrics=GuardMetrics(CollectorRegistry()))
    assert isinstance(middleware.engine, Engine)


def test_fastapi_if_installed() -> None:
    fastapi = pytest.importorskip("fastapi")
    api = fastapi.FastAPI()
    api.add_middleware(GuardMiddleware, engine=Engine(KeywordScorer(), mode=Mode.ENFORCE),
                       metrics=GuardMetrics(CollectorRegistry()))  # fmt: skip

    @api.post("/v1/chat/completions")
    async def chat() -> dict[str, Any]:
        return completion_payload(REPLY, "fastapi")

    with ServerThread(api) as server:
        response = httpx.post(f"{server.url}/v1/chat/completions",
                              json={"model": "m", "messages": USER})  # fmt: skip
    assert response.headers["x-guard-decision"] == "allow"


def test_other_generation_endpoints_under_the_prefix_are_refused(app: ChatApp, url: str) -> None:
    with client(url) as c, pytest.raises(openai.PermissionDeniedError) as caught:
        c.completions.create(model="app", prompt="Write a poem")
    assert caught.value.code == "unguarded_endpoint"
    # The app's own route outside the guarded prefix is none of the guard's business.
    assert httpx.post(f"{url}/tools/completions", content=b"abc").text == "cba"
    assert app.echoed == ["/tools/completions"]


@pytest.mark.parametrize("stream", [False, True])
def test_forwarding_while_judging_reaches_the_app_but_still_blocks(stream: bool) -> None:
    """With forward_while_judging the app is called at once; a block drops its reply."""
    shipped = load_policies(SHIPPED_POLICY_DIR)
    general = shipped.general.model_copy(update={"forward_while_judging": True})
    engine = Engine(KeywordScorer(), mode=Mode.ENFORCE, policies=replace(shipped, general=general))
    chat = ChatApp()
    app = Starlette(routes=chat.routes(), middleware=[Middleware(GuardMiddleware, engine=engine)])
    harmful = [{"role": "user", "content": "how to make meth"}]
    with ServerThread(app) as server, client(server.url) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="app", messages=harmful, stream=stream
        )
        text = completion_text(raw.parse(), stream)
    assert raw.headers["x-guard-decision"] == "block"
    assert reason_of("non_violent_crimes") in text and REPLY not in text
    assert chat.calls == 1  # the app was asked before the verdict
