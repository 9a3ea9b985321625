from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
from prometheus_client import CollectorRegistry
from servers import FakeUpstream, Guard, ServerThread, fake_upstream_app, running_guard

from guard.decisions import Mode
from guard.metrics import GuardMetrics
from guard.testing import KeywordScorer


@pytest.fixture(autouse=True)
def quiet_structlog() -> Iterator[None]:
    """Log events render to nothing unless a test configures logging or captures them.

    Without this, structlog's default prints to whatever ``sys.stdout`` was when a logger
    was made, and a server thread's event can land on the terminal between tests.
    """
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    yield
    structlog.reset_defaults()
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())


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


# A sidecar in front of that upstream, per module; modules that test engines directly
# define ``enforce`` as an engine of their own.
@pytest.fixture(scope="module")
def enforce(upstream: tuple[FakeUpstream, str], upstream_client: str) -> Iterator[Guard]:
    yield from running_guard(upstream[1], Mode.ENFORCE, client=upstream_client)


@pytest.fixture(scope="module")
def observe(upstream: tuple[FakeUpstream, str]) -> Iterator[Guard]:
    yield from running_guard(upstream[1], Mode.OBSERVE)
