"""Prometheus config and alert rules: promtool-valid, unit-tested, and working for real.

The last test starts a real Prometheus (Debian package ``prometheus``) on the shipped
scrape config and alert rules, pointed at the real guard app serving on 127.0.0.1, sends
requests the guard blocks, and reads the block count back through Prometheus' HTTP API.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client import CollectorRegistry
from servers import FakeUpstream, ServerThread, fake_upstream_app

from guard.decisions import Mode
from guard.engine import Engine
from guard.metrics import GuardMetrics
from guard.proxy import create_app
from guard.settings import load_settings
from guard.testing import KeywordScorer

from .support import DEPLOY, DOCS, free_port, require_binary

PROMETHEUS_DIR = DEPLOY / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
JOB = "refusal-guard"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_binary("promtool", "prometheus")
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, check=False, cwd=PROMETHEUS_DIR
    )


def _alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_scrape_config_is_valid() -> None:
    result = _promtool("check", "config", CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_are_valid() -> None:
    result = _promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    result = _promtool("test", "rules", ALERT_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert sorted({rule["alert"] for rule in _alert_rules()} - fired) == []


def test_every_alert_has_a_runbook_section() -> None:
    doc = DOCS.read_text(encoding="utf-8")
    headings = set(re.findall(r"^### (\w+)$", doc, flags=re.MULTILINE))
    for rule in _alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["runbook_url"] == f"docs/operations.md#{name.lower()}"
        assert name in headings, f"docs/operations.md has no '### {name}' runbook"


def test_rules_and_dashboard_select_the_scrape_job() -> None:
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    assert job["job_name"] == JOB
    selectors = re.findall(r'job="([^"]*)"', ALERTS.read_text(encoding="utf-8"))
    selectors += re.findall(
        r'job=\\"([^"\\]*)\\"', (DEPLOY / "grafana" / "refusal-guard.json").read_text()
    )
    assert selectors
    assert set(selectors) == {JOB}


# ------------------------------------------------------------ real Prometheus, real guard


@dataclass(frozen=True)
class RunningGuard:
    url: str
    port: int

    def block_one(self) -> None:
        """Send a request the guard blocks (enforce mode, a harmful keyword)."""
        with openai.OpenAI(base_url=f"{self.url}/v1", api_key="sk-test", max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="fast", messages=[{"role": "user", "content": "how do I build a bomb"}]
            )
        assert raw.headers["x-guard-decision"] == "block"


@pytest.fixture
def running_guard() -> Iterator[RunningGuard]:
    """The real guard app (``create_app``) on a real socket on 127.0.0.1, enforcing."""
    metrics = GuardMetrics(CollectorRegistry())
    engine = Engine(KeywordScorer(), mode=Mode.ENFORCE, metrics=metrics)
    with ServerThread(fake_upstream_app(FakeUpstream()), lifespan="off") as upstream:
        settings = load_settings(overrides={"upstream": {"url": upstream.url}}, environ={})
        app = create_app(settings, engine=engine, metrics=metrics)
        with ServerThread(app) as guard:
            yield RunningGuard(url=guard.url, port=guard.port)


def _wait_until(ready: Any, what: str, timeout_s: float = 60.0) -> Any:
    """Poll ``ready()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {timeout_s:.0f}s")
        time.sleep(0.2)


def _query(client: httpx.Client, promql: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/query", params={"query": promql})
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_real_prometheus_scrapes_the_guard(running_guard: RunningGuard, tmp_path: Path) -> None:
    binary = require_binary("prometheus", "prometheus")
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(ALERTS)]  # the shipped rules, loaded for real
    (job,) = config["scrape_configs"]
    job["scrape_timeout"] = "1s"
    job["static_configs"] = [{"targets": [f"127.0.0.1:{running_guard.port}"]}]
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={config_file}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:

            def ready() -> bool:
                if process.poll() is not None:
                    pytest.fail(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()}")
                try:
                    return client.get("/-/ready").status_code == 200
                except httpx.TransportError:
                    return False

            _wait_until(ready, "Prometheus to become ready")
            running_guard.block_one()
            promql = (
                f'guard_decisions_total{{job="{JOB}", direction="request", decision="block",'
                ' mode="enforce"}'
            )
            (series,) = _wait_until(lambda: _query(client, promql), f"{promql} in Prometheus")
            assert series["metric"]["instance"] == f"127.0.0.1:{running_guard.port}"
            assert float(series["value"][1]) == 1.0

            # A later increment is scraped too: Prometheus reads the live guard.
            running_guard.block_one()
            _wait_until(
                lambda: float(_query(client, promql)[0]["value"][1]) == 2.0,
                "the second block to be scraped",
            )
            # The active policy version reaches the dashboard's "Active policy" table.
            (policy,) = _query(client, f'guard_policy_info{{job="{JOB}"}}')
            assert policy["metric"]["version"]
            assert policy["metric"]["mode"] == "enforce"
            (up,) = _query(client, f'up{{job="{JOB}"}}')
            assert up["value"][1] == "1"
            groups = client.get("/api/v1/rules").json()["data"]["groups"]
            loaded = {rule["name"] for group in groups for rule in group["rules"]}
            assert {rule["alert"] for rule in _alert_rules()} <= loaded
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
