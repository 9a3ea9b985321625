"""The sidecar: a reverse proxy in front of an OpenAI-compatible server.

``POST .../chat/completions`` goes through :class:`guard.relay.ChatRelay`; ``/healthz``,
``/readyz`` and ``/metrics`` are the guard's own; other text-generation endpoints
(:mod:`guard.unguarded`) are refused while the guard enforces,
unless ``server.unguarded_generation`` is ``pass``; every other path and method passes
through untouched (status, headers minus hop-by-hop, bytes, streamed both ways).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from guard.engine import Engine
from guard.errors import UpstreamError
from guard.http_edge import (
    REQUEST_ID_HEADER,
    ClientDisconnected,
    Receive,
    Responder,
    Scope,
    Send,
    header,
    is_chat_completion,
    request_id_for,
    without_hop_by_hop,
)
from guard.logs import bound_request, get_logger
from guard.metrics import GuardMetrics
from guard.openai_api import ChatRequest
from guard.relay import ChatRelay, Forward, Reply
from guard.settings import Settings
from guard.unguarded import is_unguarded_generation, refuse_unguarded, refuses_unguarded
from guard.upstream import Upstream, UpstreamReply, upstream_kind

log = get_logger("guard.proxy")

# The client sets Host for the upstream.  A pass-through body keeps its Content-Length
# (it then streams unchunked); a chat body's length is recomputed.
_CHAT_DROP = (b"host", b"content-length")


class _DecodedReply:
    """An upstream reply read with content-encoding undone (the relay reads text)."""

    def __init__(self, reply: UpstreamReply) -> None:
        self.status = reply.status
        self.headers = reply.headers
        self._reply = reply

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self._reply.aiter_bytes()


class Sidecar:
    """The proxy's ASGI core: routes chat to the relay, the rest to pass-through."""

    def __init__(self, upstream: Upstream, relay: ChatRelay) -> None:
        self.upstream = upstream
        self.relay = relay
        self.metrics = relay.metrics
        self.settings = relay.settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # Not relayed (no OpenAI chat API uses it): refused before the handshake.
            await send({"type": "websocket.close", "code": 1003})
            return
        if is_chat_completion(scope):
            await self.relay.handle(scope, receive, send, self._forward_chat(scope))
        elif is_unguarded_generation(scope):
            if refuses_unguarded(self.settings, self.relay.engine):
                await refuse_unguarded(scope, send, self.settings, self.metrics)
            else:
                await self.passthrough(scope, receive, send, route="unguarded")
        else:
            await self.passthrough(scope, receive, send)

    def _forward_chat(self, scope: Scope) -> Forward:
        @asynccontextmanager
        async def forward(chat: ChatRequest, request_id: str) -> AsyncIterator[Reply]:
            headers = without_hop_by_hop(
                scope["headers"], *_CHAT_DROP, b"accept-encoding", REQUEST_ID_HEADER.encode()
            )
            # Identity so the relay can read the reply; the hop is local, compression buys
            # nothing there.
            headers += [(b"accept-encoding", b"identity"),
                        (REQUEST_ID_HEADER.encode(), request_id.encode())]  # fmt: skip
            url = self.upstream.url_for(scope.get("raw_path") or scope["path"].encode(),
                                        scope.get("query_string", b""))  # fmt: skip
            async with self.upstream.open("POST", url, headers, chat.body) as reply:
                yield _DecodedReply(reply)

        return forward

    async def passthrough(
        self, scope: Scope, receive: Receive, send: Send, route: str = "passthrough"
    ) -> None:
        """Relay any other request untouched, streaming the body both ways."""
        started = time.perf_counter()
        request_id = request_id_for(scope, self.settings.server.request_id_header)
        responder = Responder(send)
        error: str | None = None
        sent_bytes = 0
        with bound_request(request_id):
            try:
                sent_bytes = await self._passthrough(scope, receive, responder)
            except ClientDisconnected:
                error = "client_disconnected"
            except UpstreamError as exc:
                error = upstream_kind(exc)
                self.metrics.upstream_errors.labels(kind=error).inc()
                log.warning("upstream_failed", kind=error, cause=type(exc.__cause__).__name__)
                if not responder.started:
                    await responder.error(exc, [(b"x-request-id", request_id.encode())])
            finally:
                duration = time.perf_counter() - started
                status = responder.status or 499
                self.metrics.requests.labels(route=route,
                                             status=f"{status // 100}xx").inc()  # fmt: skip
                self.metrics.request_duration.labels(route=route).observe(duration)
                log.info("request_completed", route=route, method=scope["method"],
                         status=status, duration_s=round(duration, 6),
                         response_bytes=sent_bytes, error=error)  # fmt: skip

    async def _passthrough(self, scope: Scope, receive: Receive, responder: Responder) -> int:
        has_body = header(scope, b"content-length") not in (None, b"0") or (
            header(scope, b"transfer-encoding") is not None
        )
        content = _request_body(receive) if has_body else None
        headers = without_hop_by_hop(scope["headers"], b"host")
        url = self.upstream.url_for(scope.get("raw_path") or scope["path"].encode(),
                                    scope.get("query_string", b""))  # fmt: skip
        opened = time.perf_counter()
        async with self.upstream.open(scope["method"], url, headers, content) as reply:
            self.metrics.upstream_duration.observe(time.perf_counter() - opened)
            await responder.start(reply.status, without_hop_by_hop(reply.headers))
            async for chunk in reply.aiter_raw():
                await responder.body(chunk)
            await responder.end()
        return responder.bytes_sent


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    metrics: GuardMetrics | None = None,
) -> Starlette:
    """The sidecar app.  ``engine`` and ``metrics`` are built from settings when not given.

    The engine is closed on shutdown only when the app built it.
    """
    metrics = metrics if metrics is not None else GuardMetrics()
    owns_engine = engine is None
    if engine is None:
        from guard.factory import build_engine

        engine = build_engine(settings, metrics)
    upstream = Upstream(settings.upstream)
    sidecar = Sidecar(upstream, ChatRelay(engine, metrics, settings))
    guard_engine = engine

    async def healthz(request: Request) -> Response:
        metrics.requests.labels(route="health", status="2xx").inc()
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        # Ready when the upstream answers at all: any HTTP status proves it is there.
        try:
            async with upstream.open("GET", upstream.url_for(b"/v1/models"), []) as reply:
                status = reply.status
        except UpstreamError as exc:
            metrics.requests.labels(route="health", status="5xx").inc()
            kind = upstream_kind(exc)
            return JSONResponse({"status": "unavailable", "upstream": kind}, status_code=503)
        metrics.requests.labels(route="health", status="2xx").inc()
        return JSONResponse({"status": "ready", "upstream_status": status})

    async def metrics_endpoint(request: Request) -> Response:
        metrics.requests.labels(route="health", status="2xx").inc()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("guard_started", upstream=upstream.base_url,
                 upstream_client=settings.upstream.client, mode=settings.policy.mode)  # fmt: skip
        if owns_engine:
            await guard_engine.start(watch_policies=settings.policy.watch)
        try:
            yield
        finally:
            await upstream.aclose()
            if owns_engine:
                await guard_engine.aclose()
            log.info("guard_stopped")

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.router.default = sidecar  # everything not routed above is the sidecar's
    app.router.redirect_slashes = False  # upstream paths are the upstream's business
    app.state.sidecar = sidecar
    return app
