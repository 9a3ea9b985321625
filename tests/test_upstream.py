"""The upstream client against scripted raw-socket servers: framing, pooling, failures.

Every test taking ``make`` runs once per client (native guard.http1, and httpx).
"""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from servers import UPSTREAM_CLIENTS, ResettingServer, closed_port_url

from guard.errors import ConfigError, UpstreamBadResponse, UpstreamTimeout, UpstreamUnavailable
from guard.http1 import ClosedEarly, ProtocolError
from guard.settings import UpstreamSettings, load_settings
from guard.upstream import Upstream, translate, upstream_kind
from guard.upstream_httpx import translate_httpx

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


Make = Callable[..., Upstream]


@pytest.fixture(params=UPSTREAM_CLIENTS)
def make(request: pytest.FixtureRequest) -> Make:
    """Build an Upstream with the client under test: ``make(url, read_timeout_s=0.3)``."""

    def build(url: str, **fields: object) -> Upstream:
        settings = {"url": url, "client": request.param, **fields}
        return Upstream(UpstreamSettings.model_validate(settings))

    return build


class Scripted:
    """An HTTP server on a raw socket whose answers the test writes byte by byte."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @classmethod
    def keep_alive(cls, response: bytes) -> Scripted:
        """Records every request on a kept-alive connection and answers each with ``response``."""

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                try:
                    scripted.requests.append(await read_request(reader))
                except asyncio.IncompleteReadError:
                    return
                writer.write(response)
                await writer.drain()

        scripted = cls(handler)
        return scripted


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        head += await reader.readuntil(b"0\r\n\r\n")
    else:
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                head += await reader.readexactly(int(line.split(b":")[1]))
    return head


async def fetch(upstream: Upstream, *, raw: bool = False, **kwargs: object) -> tuple[int, bytes]:
    method = str(kwargs.pop("method", "GET"))
    content = kwargs.pop("content", None)
    async with upstream.open(method, upstream.url_for(b"/x"), [], content) as reply:  # type: ignore[arg-type]
        chunks = reply.aiter_raw() if raw else reply.aiter_bytes()
        return reply.status, b"".join([chunk async for chunk in chunks])


@pytest.mark.parametrize(
    "url", ["ftp://host", "not a url", "http://", "http://user:pw@host", "http://host:99999"]
)
def test_unusable_upstream_url_is_a_config_error(make: Make, url: str) -> None:
    with pytest.raises(ConfigError, match=r"upstream\.url"):
        make(url)


def test_incoming_path_and_query_are_joined_under_the_upstream_prefix(make: Make) -> None:
    upstream = make("http://llm:9000/base/")
    assert upstream.url_for(b"/v1/chat/completions", b"a=1&b=%20") == (
        b"/base/v1/chat/completions?a=1&b=%20"
    )
    assert make("http://llm").url_for(b"/v1/models") == b"/v1/models"
    assert upstream.base_url == "http://llm:9000/base/"


@pytest.mark.parametrize(
    ("error", "expected", "kind"),
    [
        (ConnectionRefusedError(), UpstreamUnavailable, "unavailable"),
        (ClosedEarly("gone"), UpstreamUnavailable, "unavailable"),
        (TimeoutError(), UpstreamTimeout, "timeout"),
        (ProtocolError("garbage"), UpstreamBadResponse, "bad_response"),
    ],
)
def test_transport_errors_are_translated_once(
    error: BaseException, expected: type[Exception], kind: str
) -> None:
    translated = translate(error)
    assert isinstance(translated, expected)
    assert upstream_kind(translated) == kind


def causes(exc: BaseException) -> list[type[BaseException]]:
    """What led to ``exc``, nearest first (httpcore chains some implicitly)."""
    chain: list[type[BaseException]] = []
    cause = exc.__cause__
    while cause is not None:
        chain.append(type(cause))
        cause = cause.__cause__ or cause.__context__
    return chain


async def test_refused_connection_raises_upstream_unavailable(make: Make) -> None:
    upstream = make(closed_port_url())
    with pytest.raises(UpstreamUnavailable) as caught:
        await fetch(upstream)
    assert ConnectionRefusedError in causes(caught.value)  # translated once, cause kept
    await upstream.aclose()


async def test_reset_connection_raises_upstream_unavailable(make: Make) -> None:
    with ResettingServer() as server, pytest.raises(UpstreamUnavailable):
        await fetch(make(server.url), method="POST", content=b"{}")


async def test_keep_alive_connections_are_reused(make: Make) -> None:
    scripted = Scripted.keep_alive(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello")
    async with scripted as url:
        upstream = make(url)
        for _ in range(3):
            assert await fetch(upstream) == (200, b"hello")
        await upstream.aclose()
    assert scripted.connections == 1
    assert scripted.requests[0].lower().startswith(b"get /x http/1.1\r\nhost: 127.0.0.1:")


async def test_chunked_and_close_delimited_bodies_are_read_whole(make: Make) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        if b"POST" in request:  # chunked, written in awkward pieces
            for piece in (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
                          b"lo\r\n", b"6\r\n world\r\n0\r\n\r\n"):  # fmt: skip
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.01)
        else:  # no framing at all: the body ends when the connection does
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
            await writer.drain()

    async with Scripted(handler) as url:
        upstream = make(url)
        assert await fetch(upstream, method="POST", content=b"{}") == (200, b"hello world")
        assert await fetch(upstream) == (200, b"until the end")
        await upstream.aclose()


async def test_streamed_request_body_is_sent_chunked(make: Make) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b""
        yield b"defg"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        scripted.requests.append(await read_request(reader))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    scripted = Scripted(handler)
    async with scripted as url:
        assert await fetch(make(url), method="PUT", content=body()) == (204, b"")
    assert scripted.requests[0].endswith(b"\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    assert b"transfer-encoding: chunked" in scripted.requests[0].lower()


async def test_gzip_is_decoded_for_the_relay_and_kept_for_pass_through(make: Make) -> None:
    packed = gzip.compress(b'{"ok": true}')

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\n"
                         b"content-length: %d\r\n\r\n%b" % (len(packed), packed))  # fmt: skip
            await writer.drain()

    async with Scripted(handler) as url:
        upstream = make(url)
        assert await fetch(upstream) == (200, b'{"ok": true}')
        assert await fetch(upstream, raw=True) == (200, packed)
        await upstream.aclose()


async def test_stale_kept_alive_connection_is_replaced(make: Make) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        # Keep-alive promised, then the connection is dropped anyway (an idle timeout).
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    scripted = Scripted(handler)
    async with scripted as url:
        upstream = make(url)
        assert await fetch(upstream) == (200, b"ok")
        await asyncio.sleep(0.05)
        assert await fetch(upstream, method="POST", content=b"{}") == (200, b"ok")
        await upstream.aclose()
    assert scripted.connections == 2


async def test_body_cut_midway_and_garbage_and_silence_are_translated(make: Make) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        if b"/cut" in request or b"POST" in request:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        elif b"PUT" in request:
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        else:
            await asyncio.sleep(5)  # never answers
        await writer.drain()

    async with Scripted(handler) as url:
        upstream = make(url, read_timeout_s=0.3)
        received: list[bytes] = []
        with pytest.raises(UpstreamUnavailable):
            async with upstream.open("POST", b"/cut", [], b"{}") as reply:
                async for chunk in reply.aiter_raw():
                    received.append(chunk)
        assert received == [b"partial"]
        with pytest.raises(UpstreamBadResponse):
            await fetch(upstream, method="PUT", content=b"x")
        with pytest.raises(UpstreamTimeout):
            await fetch(upstream)
        await upstream.aclose()


async def test_request_carries_the_callers_headers_and_the_clients_framing(make: Make) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        scripted.requests.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()

    scripted = Scripted(handler)
    async with scripted as url:
        upstream = make(url)
        sent = [(b"x-a", b"1"), (b"host", b"evil.example"), (b"content-length", b"99")]
        async with upstream.open("POST", b"/x", sent, b"{}") as reply:
            assert reply.status == 200
        await upstream.aclose()
    lines = scripted.requests[0].lower().split(b"\r\n")
    assert lines[0] == b"post /x http/1.1"
    assert sorted(line.split(b":")[0] for line in lines[1:-2]) == [
        b"content-length",
        b"host",
        b"x-a",
    ]  # no user-agent, accept or cookie of the client's own
    assert b"content-length: 2" in lines and b"host: evil.example" not in lines


async def test_set_cookie_of_one_response_is_not_sent_on_the_next_request(make: Make) -> None:
    scripted = Scripted.keep_alive(
        b"HTTP/1.1 200 OK\r\nset-cookie: session=user-a-secret; Path=/\r\n"
        b"content-length: 2\r\n\r\nok"
    )
    async with scripted as url:
        upstream = make(url)
        async with upstream.open("GET", b"/login", []) as reply:
            assert (b"set-cookie", b"session=user-a-secret; Path=/") in reply.headers
            assert b"".join([chunk async for chunk in reply.aiter_raw()]) == b"ok"
        assert await fetch(upstream) == (200, b"ok")  # another user's request
        await upstream.aclose()
    assert b"user-a-secret" not in scripted.requests[1]
    assert b"cookie" not in scripted.requests[1].lower()


def test_http2_needs_the_httpx_client() -> None:
    with pytest.raises(ConfigError, match=r"upstream\.http2"):
        load_settings(overrides={"upstream": {"http2": True}}, environ={})


def test_http2_over_plain_http_is_a_config_error() -> None:
    settings = UpstreamSettings(url="http://llm.example", client="httpx", http2=True)
    with pytest.raises(ConfigError, match=r"upstream\.http2: .*https://"):
        Upstream(settings)


def test_http2_without_h2_stops_start_up_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "h2", None)  # as if not installed
    settings = UpstreamSettings(url="https://llm.example", client="httpx", http2=True)
    with pytest.raises(ConfigError, match=r"upstream\.http2: .*pip install 'httpx\[http2\]'"):
        Upstream(settings)


_REQUEST = httpx.Request("GET", "http://upstream/x")
# What h11 and httpcore say when the upstream hangs up early (ClosedEarly in guard.http1).
_CUT_BODY = "peer closed connection without sending complete message body: incomplete chunked read"
_NO_RESPONSE = "Server disconnected without sending a response."


@pytest.mark.parametrize(
    ("error", "expected", "kind"),
    [
        (httpx.ConnectError("refused"), UpstreamUnavailable, "unavailable"),
        (httpx.ReadError("reset"), UpstreamUnavailable, "unavailable"),
        (httpx.ProxyError("proxy said no"), UpstreamUnavailable, "unavailable"),
        (httpx.RemoteProtocolError(_CUT_BODY), UpstreamUnavailable, "unavailable"),
        (httpx.RemoteProtocolError(_NO_RESPONSE), UpstreamUnavailable, "unavailable"),
        (httpx.ConnectTimeout("slow"), UpstreamTimeout, "timeout"),
        (httpx.ReadTimeout("slow"), UpstreamTimeout, "timeout"),
        (httpx.PoolTimeout("busy"), UpstreamTimeout, "timeout"),
        (httpx.RemoteProtocolError("illegal status line"), UpstreamBadResponse, "bad_response"),
        (httpx.DecodingError("bad gzip", request=_REQUEST), UpstreamBadResponse, "bad_response"),
    ],
)
def test_httpx_errors_are_translated_like_the_native_ones(
    error: httpx.RequestError, expected: type[Exception], kind: str
) -> None:
    translated = translate_httpx(error)
    assert isinstance(translated, expected)
    assert upstream_kind(translated) == kind


async def test_request_on_a_fresh_connection_is_not_sent_twice(make: Make) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # then hang up: the upstream may have acted on it

    scripted = Scripted(handler)
    async with scripted as url:
        upstream = make(url)
        with pytest.raises(UpstreamUnavailable):
            await fetch(upstream, method="POST", content=b"{}")
        await upstream.aclose()
    assert scripted.connections == 1


def httpx_upstream(url: str) -> Upstream:
    return Upstream(UpstreamSettings(url=url, client="httpx"))


async def test_httpx_client_goes_through_the_proxy_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        scripted.requests.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nproxied")
        await writer.drain()

    scripted = Scripted(proxy)
    async with scripted as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        upstream = httpx_upstream("http://llm.invalid:9000/base")
        assert await fetch(upstream) == (200, b"proxied")
        await upstream.aclose()
    assert scripted.requests[0].startswith(b"GET http://llm.invalid:9000/base/x HTTP/1.1\r\n")


async def test_httpx_client_skips_the_proxy_for_no_proxy_hosts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\ndirect")
        await writer.drain()

    async with Scripted(handler) as url:
        monkeypatch.setenv("HTTP_PROXY", closed_port_url())  # would refuse the connection
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        upstream = httpx_upstream(url)
        assert await fetch(upstream) == (200, b"direct")
        await upstream.aclose()


def private_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate it signed for 127.0.0.1: (ca, cert, key)."""
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=test CA"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "1", "-extfile", ext],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
    return ca, cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_httpx_client_trusts_the_ca_bundle_in_ssl_cert_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, cert, key = private_ca(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the client refused the certificate
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntls")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    try:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        untrusting = httpx_upstream(url)
        with pytest.raises(UpstreamUnavailable):  # the private CA is not in the default store
            await fetch(untrusting)
        await untrusting.aclose()
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        trusting = httpx_upstream(url)
        assert await fetch(trusting) == (200, b"tls")
        await trusting.aclose()
    finally:
        server.close()
