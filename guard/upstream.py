"""The HTTP client to the upstream LLM server: the one place httpx errors are translated.

:meth:`Upstream.open` sends a request (body bytes or a stream of them) and yields an
:class:`UpstreamReply` whose status and headers have arrived and whose body is read
as it comes.  Every httpx failure, when opening or mid-body, becomes
:class:`UpstreamUnavailable`, :class:`UpstreamTimeout` or :class:`UpstreamBadResponse`.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import asynccontextmanager
from http.cookiejar import Cookie, CookieJar
from typing import Any

import httpx

from guard.errors import (
    ConfigError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from guard.settings import UpstreamSettings

Headers = list[tuple[bytes, bytes]]


def translate(exc: httpx.HTTPError) -> UpstreamError:
    """The guard's error for an httpx error (the caller raises it ``from exc``)."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"upstream timed out ({type(exc).__name__})")
    if isinstance(exc, httpx.DecodingError | httpx.TooManyRedirects):
        return UpstreamBadResponse(f"upstream response unusable ({type(exc).__name__})")
    return UpstreamUnavailable(f"upstream unavailable ({type(exc).__name__})")


def upstream_kind(exc: UpstreamError) -> str:
    """Label value of ``guard_upstream_errors_total{kind}``."""
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, UpstreamBadResponse):
        return "bad_response"
    return "unavailable"


class _NoCookies(CookieJar):
    """A jar that keeps nothing: one client serves every user, so a cookie one upstream
    response sets must never ride along on another user's request."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def set_cookie(self, cookie: Cookie) -> None:
        return None


class UpstreamReply:
    """An upstream response whose head has arrived; the body is read on demand."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Headers = [(name.lower(), value) for name, value in response.headers.raw]

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """Body bytes exactly as sent (any content-encoding kept)."""
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise translate(exc) from exc

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Body bytes with any content-encoding undone."""
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise translate(exc) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class Upstream:
    """One pooled client for every request of the process."""

    def __init__(
        self,
        settings: UpstreamSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        try:
            base = httpx.URL(settings.url)
        except httpx.InvalidURL as exc:
            raise ConfigError(f"upstream.url: not a valid URL: {settings.url!r}") from exc
        if base.scheme not in ("http", "https") or not base.host:
            raise ConfigError(f"upstream.url: must be an http(s) URL, got {settings.url!r}")
        self.base_url = base
        self._prefix = base.raw_path.rstrip(b"/")
        timeout = httpx.Timeout(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            write=settings.read_timeout_s,
            pool=settings.connect_timeout_s,
        )
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
        )
        self._client = httpx.AsyncClient(
            timeout=timeout,
            limits=limits,
            transport=transport,
            trust_env=False,
            cookies=_NoCookies(),
        )

    def url_for(self, raw_path: bytes, query_string: bytes = b"") -> httpx.URL:
        """The upstream URL for an incoming path (the upstream URL's own path prefixes it)."""
        if not query_string:
            return self._url_for_path(raw_path)
        return self.base_url.copy_with(raw_path=self._prefix + (raw_path or b"/") + b"?" +
                                       query_string)  # fmt: skip

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - one Upstream per process, lives as long
    def _url_for_path(self, raw_path: bytes) -> httpx.URL:
        # Building an httpx.URL re-parses it; the same few paths repeat on every request.
        return self.base_url.copy_with(raw_path=self._prefix + (raw_path or b"/"))

    @asynccontextmanager
    async def open(
        self,
        method: str,
        url: httpx.URL,
        headers: Iterable[tuple[bytes, bytes]],
        content: bytes | AsyncIterable[bytes] | None = None,
    ) -> AsyncIterator[UpstreamReply]:
        """Send the request; yield once the response head has arrived; always close."""
        request = self._client.build_request(method, url, headers=list(headers), content=content)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise translate(exc) from exc
        reply = UpstreamReply(response)
        try:
            yield reply
        finally:
            await reply.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()
