"""The upstream client on httpx (``upstream.client: httpx``), for what the native one lacks.

:mod:`guard.http1` is the default because it is cheap (benchmarks/README.md); httpx
costs more CPU per request but brings HTTP/2 (with the ``h2`` package), the proxy
variables (``HTTPS_PROXY``, ``NO_PROXY``) and ``SSL_CERT_FILE``/``SSL_CERT_DIR`` from the
environment, and mature TLS.  :class:`HttpxPool` has the shape :class:`guard.http1.Pool`
has, so :class:`guard.upstream.Upstream` drives either, and httpx's errors become the
guard's here, once.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from http.client import HTTPResponse
from http.cookiejar import Cookie, CookieJar
from urllib.request import Request as UrllibRequest

import httpx

from guard.errors import (
    ConfigError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from guard.http1 import Origin
from guard.settings import UpstreamSettings

Headers = list[tuple[bytes, bytes]]

# Framing is the client's to decide, as in guard.http1: httpx writes Host and the body's
# length itself.  A declared Content-Length is kept for a streamed body only.
_FRAMING = frozenset((b"host", b"transfer-encoding", b"expect"))
# What h11 and httpcore say when the upstream hangs up early: the native client's
# ClosedEarly, so the same failure gets the same kind whichever client runs.
_CLOSED_EARLY = ("peer closed connection", "Server disconnected")


def _closed_early(exc: httpx.RequestError) -> bool:
    """The connection died before the message ended (not: the upstream sent garbage)."""
    if isinstance(exc, httpx.RemoteProtocolError):
        return str(exc).startswith(_CLOSED_EARLY)
    return isinstance(exc, httpx.ReadError | httpx.WriteError)


def translate_httpx(exc: httpx.RequestError) -> UpstreamError:
    """The guard's error for an httpx failure (the caller raises it ``from exc``)."""
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"upstream timed out ({name})")
    if isinstance(exc, httpx.RemoteProtocolError) and not _closed_early(exc):
        return UpstreamBadResponse(f"upstream response unusable ({name})")
    if isinstance(exc, httpx.DecodingError):
        return UpstreamBadResponse(f"upstream response unusable ({name})")
    return UpstreamUnavailable(f"upstream unavailable ({name})")


class _DiscardingJar(CookieJar):
    """Keeps no cookie: one client serves every user, and a Set-Cookie is one user's."""

    def extract_cookies(self, response: HTTPResponse, request: UrllibRequest) -> None:
        return None

    def set_cookie(self, cookie: Cookie) -> None:
        return None


class _Attempt:
    """Whether sending one request opened a connection (httpcore's trace events say)."""

    __slots__ = ("connected",)

    def __init__(self) -> None:
        self.connected = False

    async def trace(self, event: str, info: dict[str, object]) -> None:
        if event.startswith("connection.connect_"):
            self.connected = True


class HttpxResponse:
    """An httpx response whose head has arrived; the body is read raw as it comes."""

    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status: int = response.status_code
        # Lower-case names, as guard.http1 gives them (the relay compares them so).
        self.headers: Headers = [(name.lower(), value) for name, value in response.headers.raw]

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """Body bytes exactly as sent: de-chunked, any content-encoding kept."""
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.RequestError as exc:
            raise translate_httpx(exc) from exc

    async def aclose(self) -> None:
        # A failed connection was reported when the body was read; closing it is cleanup.
        with contextlib.suppress(httpx.TransportError):
            await self._response.aclose()


class HttpxPool:
    """One ``httpx.AsyncClient`` for every request of the process, to one origin."""

    def __init__(self, origin: Origin, settings: UpstreamSettings) -> None:
        if settings.http2 and origin.scheme != "https":
            # httpx negotiates HTTP/2 through TLS (ALPN); over plain http it would quietly
            # speak HTTP/1.1, so asking for it there is a mistake worth stopping on.
            raise ConfigError("upstream.http2: HTTP/2 needs an https:// upstream.url")
        if settings.http2 and importlib.util.find_spec("h2") is None:
            raise ConfigError(
                "upstream.http2: HTTP/2 needs the h2 package: pip install 'httpx[http2]'"
            )
        self._origin = f"{origin.scheme}://{origin.authority.decode('ascii')}"
        timeout = httpx.Timeout(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            write=settings.read_timeout_s,
            pool=settings.connect_timeout_s,  # waiting for a free connection, as http1
        )
        self._timeout = timeout.as_dict()
        self._client = httpx.AsyncClient(
            http2=settings.http2,
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_connections,
            ),
            timeout=timeout,
            follow_redirects=False,  # a redirect is the caller's to follow
            trust_env=True,  # HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE
            cookies=_DiscardingJar(),
        )

    async def request(
        self,
        method: str,
        target: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        content: bytes | AsyncIterable[bytes] | None,
    ) -> HttpxResponse:
        """Send a request and read the response head; the caller must ``aclose`` it."""
        streamed = isinstance(content, AsyncIterable)
        sent = [
            (name, value)
            for name, value in headers
            if (lowered := name.lower()) not in _FRAMING
            and (streamed or lowered != b"content-length")
        ]
        url = self._origin + target.decode("latin-1")
        attempt = _Attempt()
        try:
            try:
                return await self._send(method, url, sent, content, attempt)
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
                # The upstream may close a kept-alive connection just as it is reused
                # (guard.http1 does the same): a body held whole is sent once more.
                if streamed or attempt.connected or not _closed_early(exc):
                    raise
                return await self._send(method, url, sent, content, _Attempt())
        except httpx.RequestError as exc:
            raise translate_httpx(exc) from exc

    async def _send(
        self,
        method: str,
        url: str,
        headers: Headers,
        content: bytes | AsyncIterable[bytes] | None,
        attempt: _Attempt,
    ) -> HttpxResponse:
        # Built directly, not with client.build_request: nothing of the client's (headers,
        # cookies) is merged in, so the request carries the caller's headers only.
        request = httpx.Request(
            method,
            url,
            headers=headers,
            content=content,
            extensions={"timeout": self._timeout, "trace": attempt.trace},
        )
        return HttpxResponse(await self._client.send(request, stream=True))

    async def aclose(self) -> None:
        await self._client.aclose()
