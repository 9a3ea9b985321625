"""Fixtures for the conversation memory: both stores, a real redis-server, a tracker."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis

from guard.memory.escalation import EscalationConfig
from guard.memory.identity import Keyring
from guard.memory.memory_store import MemoryStore
from guard.memory.redis_store import RedisStore
from guard.memory.store import StateStore
from guard.memory.tracker import ConversationMemory
from guard.metrics import GuardMetrics
from guard.testing import KeywordScorer

SECRET = b"test-secret-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A real redis-server on a free port in a temporary directory, stoppable and restartable."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=1)


def _redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is required in CI (installed by .ci/run)")
        pytest.skip("redis-server binary not found; install redis-server to run these tests")
    return binary


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(_redis_binary(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that kill and restart it."""
    server = RedisServer(_redis_binary(), tmp_path)
    server.start()
    yield server
    server.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, metrics: GuardMetrics) -> AsyncIterator[StateStore]:
    """The same suite runs against each store."""
    built: StateStore
    if request.param == "memory":
        built = MemoryStore(ttl_s=3600, max_conversations=1000, max_bytes=1 << 24, metrics=metrics)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        with server.client() as client:
            client.flushdb()
        built = RedisStore(server.url, ttl_s=3600, timeout_s=2.0)
    yield built
    await built.aclose()


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(SECRET)


@pytest.fixture
def make_memory(
    store: StateStore, scorer: KeywordScorer, keyring: Keyring, metrics: GuardMetrics
) -> Callable[..., ConversationMemory]:
    def build(**kwargs: object) -> ConversationMemory:
        return ConversationMemory(scorer, store, keyring, metrics=metrics, **kwargs)  # type: ignore[arg-type]

    return build


# The mechanics under test, independent of the weights tuned for the shipped model:
# every turn counts alone, the joint score counts fully, a rising trend adds risk.
MECHANICS = EscalationConfig(min_turn_words=0, joint_weight=1.0, trend_weight=1.0)


@pytest.fixture
def memory(make_memory: Callable[..., ConversationMemory]) -> ConversationMemory:
    return make_memory(config=MECHANICS)
