from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from servers import FakeUpstream, ServerThread, fake_upstream_app

from guard.metrics import GuardMetrics
from guard.testing import KeywordScorer


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> GuardMetrics:
    return GuardMetrics(registry)


@pytest.fixture
def scorer() -> KeywordScorer:
    return KeywordScorer()


@pytest.fixture(scope="module")
def upstream_client(request: pytest.FixtureRequest) -> str:
    """The upstream client of the guard under test: native unless parametrised.

    Tests that must hold for both clients are marked ``@servers.both_clients``.
    """
    client: str = getattr(request, "param", "native")
    return client


# The fake upstream of the transport tests, one per test module (a module may define its own).
@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeUpstream, str]]:
    state = FakeUpstream()
    with ServerThread(fake_upstream_app(state), lifespan="off") as server:
        yield state, server.url


@pytest.fixture
def fake(upstream: tuple[FakeUpstream, str]) -> FakeUpstream:
    upstream[0].reset()
    return upstream[0]
