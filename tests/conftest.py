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
