"""The client to the upstream LLM server: the one place transport errors are translated.

:meth:`Upstream.open` sends a request (body bytes or a stream of them) and yields an
:class:`UpstreamReply` whose status and headers have arrived and whose body is read as
it comes.  Every failure, when opening or mid-body, becomes :class:`UpstreamUnavailable`,
:class:`UpstreamTimeout` or :class:`UpstreamBadResponse`.  The HTTP itself is
:mod:`guard.http1` by default (chosen over httpx for the hop's cost: benchmarks/README.md)
or, with ``upstream.client: httpx``, :mod:`guard.upstream_httpx` (HTTP/2, proxy and CA
variables from the environment), which translates httpx's errors itself.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Protocol
from urllib.parse import urlsplit

from guard.errors import (
    ConfigError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from guard.http1 import Origin, Pool, ProtocolError
from guard.settings import UpstreamSettings

Headers = list[tuple[bytes, bytes]]


def translate(exc: BaseException) -> UpstreamError:
    """The guard's error for a transport failure (the caller raises it ``from exc``)."""
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"upstream timed out ({type(exc).__name__})")
    if isinstance(exc, ProtocolError | zlib.error):
        return UpstreamBadResponse(f"upstream response unusable ({type(exc).__name__})")
    return UpstreamUnavailable(f"upstream unavailable ({type(exc).__name__})")


_TRANSPORT_ERRORS = (OSError, TimeoutError, ProtocolError, zlib.error)


def upstream_kind(exc: UpstreamError) -> str:
    """Label value of ``guard_upstream_errors_total{kind}``."""
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, UpstreamBadResponse):
        return "bad_response"
    return "unavailable"


class _Response(Protocol):
    """What a pool's request returns (:class:`guard.http1.Response` or the httpx one)."""

    status: int
    headers: Headers

    def aiter_raw(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class _Pool(Protocol):
    async def request(
        self,
        method: str,
        target: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        content: bytes | AsyncIterable[bytes] | None,
    ) -> _Response: ...

    async def aclose(self) -> None: ...


class UpstreamReply:
    """An upstream response whose head has arrived; the body is read on demand."""

    def __init__(self, response: _Response) -> None:
        self._response = response
        self.status = response.status
        self.headers: Headers = response.headers

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """Body bytes exactly as sent (any content-encoding kept)."""
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except _TRANSPORT_ERRORS as exc:
            raise translate(exc) from exc

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Body bytes with a gzip or deflate content-encoding undone."""
        encoding = next((v for k, v in self.headers if k == b"content-encoding"), b"identity")
        encoding = encoding.strip().lower()
        if encoding == b"identity":
            async for chunk in self.aiter_raw():
                yield chunk
            return
        if encoding not in (b"gzip", b"x-gzip", b"deflate"):
            raise UpstreamBadResponse(f"unsupported content-encoding {encoding!r}")
        decoder = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib, detected
        try:
            async for chunk in self.aiter_raw():
                yield decoder.decompress(chunk)
            yield decoder.flush()
        except zlib.error as exc:
            raise translate(exc) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class Upstream:
    """One connection pool for every request of the process."""

    def __init__(self, settings: UpstreamSettings) -> None:
        parts = urlsplit(settings.url)
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"upstream.url: bad port in {settings.url!r}") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"upstream.url: must be an http(s) URL, got {settings.url!r}")
        if parts.username or parts.password:
            raise ConfigError("upstream.url: credentials in the URL are not supported")
        origin = Origin(
            parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)
        )
        self.base_url = f"{parts.scheme}://{origin.authority.decode()}{parts.path}"
        self._prefix = parts.path.rstrip("/").encode()
        self._pool: _Pool
        if settings.client == "httpx":
            from guard.upstream_httpx import HttpxPool  # imported only when chosen

            self._pool = HttpxPool(origin, settings)
        else:
            self._pool = Pool(
                origin,
                connect_timeout=settings.connect_timeout_s,
                read_timeout=settings.read_timeout_s,
                write_timeout=settings.read_timeout_s,
                max_connections=settings.max_connections,
            )

    def url_for(self, raw_path: bytes, query_string: bytes = b"") -> bytes:
        """The upstream request target for an incoming path (under the upstream URL's path)."""
        if not query_string:
            return self._target(raw_path)
        return self._target(raw_path) + b"?" + query_string

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - one Upstream per process, lives as long
    def _target(self, raw_path: bytes) -> bytes:
        return self._prefix + (raw_path or b"/")

    @asynccontextmanager
    async def open(
        self,
        method: str,
        target: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        content: bytes | AsyncIterable[bytes] | None = None,
    ) -> AsyncIterator[UpstreamReply]:
        """Send the request; yield once the response head has arrived; always close."""
        try:
            response = await self._pool.request(method, target, headers, content)
        except _TRANSPORT_ERRORS as exc:
            raise translate(exc) from exc
        reply = UpstreamReply(response)
        try:
            yield reply
        finally:
            await reply.aclose()

    async def aclose(self) -> None:
        await self._pool.aclose()
