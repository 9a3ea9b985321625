"""What the proxy and the middleware share at the HTTP edge, in plain ASGI terms.

Header names, request ids, hop-by-hop filtering, reading a request body under a size
limit, cancelling work when the client disconnects, and turning a
:class:`guard.errors.GuardError` into a status and an OpenAI error body.  Nothing here
knows Starlette or the upstream client.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from guard.decisions import Action
from guard.errors import (
    BodyTooLarge,
    GuardError,
    RequestError,
    UnsupportedMediaType,
    UpstreamError,
)
from guard.openai_api import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

DECISION_HEADER = b"x-guard-decision"
WOULD_HEADER = b"x-guard-would"
REQUEST_ID_HEADER = "x-request-id"
CHAT_SUFFIX = "/chat/completions"

# RFC 9110 section 7.6.1, plus the proxy-* family; never forwarded in either direction.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    )
)
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def header(scope: Scope, name: bytes) -> bytes | None:
    """First value of a request header (``name`` lower-case)."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def header_text(scope: Scope, name: str) -> str | None:
    """A request header's first value as text (``name`` in any case), or None."""
    raw = header(scope, name.lower().encode("latin-1"))
    return raw.decode("latin-1") if raw is not None else None


def first_header(headers: Headers, name: bytes) -> bytes | None:
    """First value of ``name`` (lower-case) in a response's header list."""
    for key, value in headers:
        if key == name:
            return value
    return None


def is_chat_completion(scope: Scope, prefix: str | None = None) -> bool:
    """``POST <prefix>/chat/completions`` (any prefix when ``prefix`` is None)."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return False
    path: str = scope["path"].rstrip("/")
    if prefix is None:
        return path.endswith(CHAT_SUFFIX)
    return path == prefix.rstrip("/") + CHAT_SUFFIX


def request_id_for(scope: Scope, header_name: str = REQUEST_ID_HEADER) -> str:
    """The client's request id when it is safe to echo and log, else a fresh one."""
    incoming = header(scope, header_name.lower().encode("latin-1"))
    if incoming is not None:
        text = incoming.decode("latin-1")
        if _SANE_REQUEST_ID.fullmatch(text):
            return text
    # An id, not a secret: no system call for randomness on every request.
    return f"{random.getrandbits(128):032x}"


def without_hop_by_hop(headers: Iterable[tuple[bytes, bytes]], *drop: bytes) -> Headers:
    """Headers minus hop-by-hop ones, those named in Connection, and ``drop``."""
    pairs = [(name.lower(), value) for name, value in headers]
    named = {
        token.strip().lower()
        for name, value in pairs
        if name == b"connection"
        for token in value.split(b",")
    }
    excluded = HOP_BY_HOP | named | set(drop)
    return [(name, value) for name, value in pairs if name not in excluded]


def decision_headers(request_id: str, decision: Action, would: Action | None) -> Headers:
    """``x-request-id``, ``x-guard-decision`` and, in observe mode, ``x-guard-would``."""
    out: Headers = [
        (REQUEST_ID_HEADER.encode(), request_id.encode("latin-1")),
        (DECISION_HEADER, decision.value.encode()),
    ]
    if would is not None:
        out.append((WOULD_HEADER, would.value.encode()))
    return out


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error as the client sees it: status and OpenAI-shaped JSON body."""

    status: int
    body: bytes

    @property
    def headers(self) -> Headers:
        return [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
        ]


def error_reply(exc: BaseException) -> ErrorReply:
    """Map any exception to what the client is told; never echoes library error text."""
    if isinstance(exc, RequestError):
        body = error_body(exc.message, exc.error_type, exc.param, exc.code)
        return ErrorReply(exc.status_code, body)
    if isinstance(exc, UpstreamError):
        message = {
            504: "The upstream model server did not answer in time.",
        }.get(exc.status_code, "The upstream model server could not be reached or misbehaved.")
        return ErrorReply(exc.status_code, error_body(message, "upstream_error", None, exc.code))
    if isinstance(exc, GuardError):
        return ErrorReply(
            503,
            error_body(
                "The guard cannot judge this request now.",
                "server_error",
                None,
                "guard_unavailable",
            ),
        )
    return ErrorReply(
        500, error_body("The guard failed on this request.", "server_error", None, "internal_error")
    )


def check_json_content_type(scope: Scope) -> None:
    """Accept ``application/json`` (or ``+json``), or no content type at all."""
    raw = header(scope, b"content-type")
    if raw is None:
        return
    media = raw.split(b";", 1)[0].strip().lower()
    if media == b"application/json" or media.endswith(b"+json"):
        return
    raise UnsupportedMediaType("Content-Type must be application/json.", param="content-type")


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """Read the whole request body, refusing as soon as it passes ``limit`` bytes.

    A declared Content-Length over the limit is refused before any byte is read; a
    chunked body is counted as it arrives, so an oversized one is never held whole.
    """
    declared = header(scope, b"content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"Request body is larger than {limit} bytes.", param=None)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"Request body is larger than {limit} bytes.", param=None)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class ClientDisconnected(Exception):
    """The client went away; nothing more can be sent."""


async def unless_disconnected(work: Coroutine[Any, Any, None], receive: Receive) -> None:
    """Run ``work``; cancel it (closing the upstream) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
            return
        raise ClientDisconnected
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class Responder:
    """Sends one HTTP response over ASGI ``send`` and remembers what went out."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.finished = False
        self.status = 0
        self.bytes_sent = 0

    async def start(self, status: int, headers: Headers) -> None:
        self.started = True
        self.status = status
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, chunk: bytes) -> None:
        if chunk:
            self.bytes_sent += len(chunk)
            await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def end(self, chunk: bytes = b"") -> None:
        self.bytes_sent += len(chunk)
        self.finished = True
        await self._send({"type": "http.response.body", "body": chunk, "more_body": False})

    async def whole(self, status: int, headers: Headers, body: bytes) -> None:
        await self.start(status, headers)
        await self.end(body)

    async def error(self, exc: BaseException, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
        reply = error_reply(exc)
        await self.whole(reply.status, reply.headers + list(extra), reply.body)
