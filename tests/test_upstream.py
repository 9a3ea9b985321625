from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from servers import ResettingServer, closed_port_url

from guard.errors import (
    ConfigError,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from guard.settings import UpstreamSettings
from guard.upstream import Upstream, translate, upstream_kind


def make(url: str, **fields: float) -> Upstream:
    return Upstream(UpstreamSettings.model_validate({"url": url, **fields}))


@pytest.mark.parametrize("url", ["ftp://host", "not a url", "http://"])
def test_unusable_upstream_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"upstream\.url"):
        make(url)


def test_incoming_path_and_query_are_joined_under_the_upstream_prefix() -> None:
    upstream = make("http://llm:9000/base/")
    url = upstream.url_for(b"/v1/chat/completions", b"a=1&b=%20")
    assert str(url) == "http://llm:9000/base/v1/chat/completions?a=1&b=%20"
    assert str(make("http://llm").url_for(b"/v1/models")) == "http://llm/v1/models"


@pytest.mark.parametrize(
    ("error", "expected", "kind"),
    [
        (httpx.ConnectError("refused"), UpstreamUnavailable, "unavailable"),
        (httpx.RemoteProtocolError("reset"), UpstreamUnavailable, "unavailable"),
        (httpx.ReadTimeout("slow"), UpstreamTimeout, "timeout"),
        (httpx.PoolTimeout("busy"), UpstreamTimeout, "timeout"),
        (httpx.DecodingError("gzip"), UpstreamBadResponse, "bad_response"),
    ],
)
def test_httpx_errors_are_translated_once(
    error: httpx.HTTPError, expected: type[Exception], kind: str
) -> None:
    translated = translate(error)
    assert isinstance(translated, expected)
    assert upstream_kind(translated) == kind


async def test_refused_connection_raises_upstream_unavailable() -> None:
    upstream = make(closed_port_url())
    with pytest.raises(UpstreamUnavailable) as caught:
        async with upstream.open("GET", upstream.url_for(b"/v1/models"), []):
            pass
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    await upstream.aclose()


async def test_reset_connection_raises_upstream_unavailable() -> None:
    with ResettingServer() as server:
        upstream = make(server.url)
        with pytest.raises(UpstreamUnavailable):
            async with upstream.open("POST", upstream.url_for(b"/x"), [], b"{}"):
                pass
        await upstream.aclose()


async def test_body_errors_mid_stream_are_translated() -> None:
    async def broken_body() -> AsyncIterator[bytes]:
        yield b"partial"
        raise httpx.ReadError("connection lost")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=broken_body())

    upstream = Upstream(
        UpstreamSettings.model_validate({"url": "http://llm"}),
        transport=httpx.MockTransport(handler),
    )
    received = []
    with pytest.raises(UpstreamUnavailable):
        async with upstream.open("GET", upstream.url_for(b"/"), []) as reply:
            async for chunk in reply.aiter_raw():
                received.append(chunk)
    assert received == [b"partial"]
    await upstream.aclose()
