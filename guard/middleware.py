"""GuardMiddleware: the same engine and decisions inside an ASGI app that serves chat itself.

Pure ASGI, so it wraps Starlette, FastAPI or any other ASGI app::

    app = Starlette(routes=..., middleware=[Middleware(GuardMiddleware, engine=engine)])

``POST <prefix>/chat/completions`` is judged by :class:`guard.relay.ChatRelay` exactly as
the sidecar judges it, with the wrapped app in the upstream's place; other generation
endpoints under the prefix are refused while the guard enforces, as the sidecar refuses
them (:mod:`guard.unguarded`); every other request, and lifespan, goes to the app untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from guard.engine import Engine
from guard.errors import UpstreamBadResponse, UpstreamUnavailable
from guard.http_edge import (
    REQUEST_ID_HEADER,
    ASGIApp,
    Headers,
    Message,
    Receive,
    Scope,
    Send,
    is_chat_completion,
)
from guard.metrics import GuardMetrics
from guard.openai_api import ChatRequest
from guard.relay import ChatRelay, Reply
from guard.settings import Settings
from guard.unguarded import is_unguarded_generation, refuse_unguarded, refuses_unguarded

_DONE = None  # queue sentinel: the app returned (or failed)


class _AppReply:
    """The wrapped app's response, read from the messages it sends."""

    def __init__(
        self, start: Message, queue: asyncio.Queue[Message | None], task: asyncio.Task[None]
    ) -> None:
        self.status: int = start["status"]
        self.headers: Headers = [(bytes(k).lower(), bytes(v)) for k, v in start.get("headers", [])]
        self._queue = queue
        self._task = task

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._queue.get()
            if message is _DONE:
                await _raise_if_failed(self._task)
                return
            if message["type"] != "http.response.body":
                continue
            yield bytes(message.get("body", b""))
            if not message.get("more_body", False):
                return


async def _app_error(task: asyncio.Task[None]) -> BaseException | None:
    """What the app raised, once it has finished (it is finishing when this is asked)."""
    await asyncio.wait({task})
    return None if task.cancelled() else task.exception()


async def _raise_if_failed(task: asyncio.Task[None]) -> None:
    error = await _app_error(task)
    if error is not None:
        raise UpstreamUnavailable("the wrapped app failed mid-response") from error


class GuardMiddleware:
    """Judges the wrapped app's chat completions; passes everything else through.

    ``prefix`` is the path before ``/chat/completions`` (``None``: any path ending so).
    Without ``engine`` one is built from ``settings`` by :func:`guard.factory.build_engine`.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        engine: Engine | None = None,
        settings: Settings | None = None,
        metrics: GuardMetrics | None = None,
        prefix: str | None = "/v1",
    ) -> None:
        self.app = app
        self.settings = settings if settings is not None else Settings()
        self.metrics = metrics if metrics is not None else GuardMetrics()
        self._owns_engine = engine is None
        if engine is None:
            from guard.factory import build_engine

            engine = build_engine(self.settings, self.metrics)
        self.engine = engine
        self.prefix = prefix
        self.relay = ChatRelay(engine, self.metrics, self.settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self._owns_engine:
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        if not is_chat_completion(scope, self.prefix):
            if is_unguarded_generation(scope, self.prefix) and refuses_unguarded(
                self.settings, self.engine
            ):
                await refuse_unguarded(scope, send, self.settings, self.metrics)
            else:
                await self.app(scope, receive, send)
            return
        await self.relay.handle(
            scope,
            receive,
            send,
            lambda chat, request_id: self._call_app(scope, receive, chat, request_id),
            # The app reads ``receive`` itself after the replayed body; two readers
            # would steal each other's messages, so the app watches for disconnects.
            watch_disconnect=False,
        )

    def _lifespan_receive(self, receive: Receive) -> Receive:
        """Start and close the engine this middleware built with the app's lifespan."""

        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.engine.start(watch_policies=self.settings.policy.watch)
            elif message["type"] == "lifespan.shutdown":
                await self.engine.aclose()
            return message

        return lifespan_receive

    @asynccontextmanager
    async def _call_app(
        self, scope: Scope, receive: Receive, chat: ChatRequest, request_id: str
    ) -> AsyncIterator[Reply]:
        replayed = False

        async def app_receive() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": chat.body, "more_body": False}
            return await receive()

        # Bounded: a slow client slows the app down instead of filling memory.
        queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=16)

        async def app_send(message: Message) -> None:
            await queue.put(message)

        async def run() -> None:
            try:
                await self.app(_with_request_id(scope, request_id), app_receive, app_send)
            finally:
                await queue.put(_DONE)

        task = asyncio.ensure_future(run())
        try:
            start = await queue.get()
            while start is not _DONE and start["type"] != "http.response.start":
                start = await queue.get()
            if start is _DONE:
                error = await _app_error(task)
                if error is not None:
                    raise error  # the app's own bug: answered 500 like an engine bug
                raise UpstreamBadResponse("the wrapped app returned without a response")
            yield _AppReply(start, queue, task)
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _with_request_id(scope: Scope, request_id: str) -> Scope:
    """The scope the app sees: same request, with the guard's request id header."""
    name = REQUEST_ID_HEADER.encode()
    headers = [(k, v) for k, v in scope.get("headers", []) if k != name]
    headers.append((name, request_id.encode()))
    return {**scope, "headers": headers}
