from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

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
