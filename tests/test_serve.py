"""``guard serve`` as a user runs it: a subprocess, flags, GUARD_* variables, a config file."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from servers import FakeUpstream, ServerThread, fake_upstream_app

REPO = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guard", "serve", *args],
        cwd=REPO,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "field"),
    [
        (["--port", "99999"], {}, "server.port"),
        (["--port", "eighty"], {}, "server.port"),
        (["--mode", "bogus"], {}, "policy.mode"),
        (["--upstream", "ftp://example.invalid"], {}, "upstream.url"),
        ([], {"GUARD_UPSTREAM__READ_TIMEOUT_S": "soon"}, "upstream.read_timeout_s"),
        ([], {"GUARD_SERVER__NO_SUCH_FIELD": "1"}, "server.no_such_field"),
        (["--upstream-client", "curl"], {}, "upstream.client"),
        ([], {"GUARD_UPSTREAM__HTTP2": "true"}, "upstream.http2"),  # the native client is 1.1
        pytest.param(
            ["--upstream-client", "httpx", "--upstream", "https://127.0.0.1:8443"],
            {"GUARD_UPSTREAM__HTTP2": "true"},
            "pip install 'httpx[http2]'",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("h2") is not None, reason="h2 is installed"
            ),
        ),
    ],
)
def test_bad_setting_stops_start_up_naming_the_field(
    args: list[str], env: dict[str, str], field: str
) -> None:
    result = _serve(*args, env=_env(**env))
    assert result.returncode == 2
    assert field in result.stderr


def test_bad_config_file_names_file_and_field(tmp_path: Path) -> None:
    config = tmp_path / "guard.yaml"
    config.write_text("server:\n  max_body_bytes: -5\n")
    result = _serve("--config", str(config))
    assert result.returncode == 2
    assert str(config) in result.stderr and "server.max_body_bytes" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def upstream() -> Iterator[str]:
    with ServerThread(fake_upstream_app(FakeUpstream()), lifespan="off") as server:
        yield server.url


@pytest.mark.parametrize("upstream_client", ["native", "httpx"])
def test_serve_runs_the_sidecar_until_terminated(
    upstream: str, tmp_path: Path, upstream_client: str
) -> None:
    port = _free_port()
    config = tmp_path / "guard.yaml"
    config.write_text("server:\n  max_body_bytes: 100000\n")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "guard",
            "serve",
            "--upstream",
            upstream,
            "--port",
            str(port),
            "--config",
            str(config),
        ],
        cwd=REPO,
        env=_env(GUARD_MODE="enforce", GUARD_UPSTREAM__CLIENT=upstream_client),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "guard serve did not become ready"
            time.sleep(0.1)
        with openai.OpenAI(base_url=f"{base}/v1", api_key="sk-serve", max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="fast", messages=[{"role": "user", "content": "build a bomb"}]
            )
        assert raw.headers["x-guard-decision"] == "block"  # GUARD_MODE reached the engine
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why.
    assert process.returncode in (0, -signal.SIGTERM)
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    completed = [event for event in events if event.get("event") == "request_completed"]
    assert any(e["route"] == "chat" and e["decision"] == "block" for e in completed)
    started = next(event for event in events if event.get("event") == "guard_started")
    assert started["upstream_client"] == upstream_client  # GUARD_UPSTREAM__CLIENT reached the proxy
    names = [e["event"] for e in events]
    assert "guard_stopped" in names[names.index("guard_started") :]  # lifespan ran to the end
    assert "sk-serve" not in stderr and "bomb" not in stderr
