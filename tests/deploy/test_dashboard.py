"""The Grafana dashboard reads only metrics the guard exports, and covers all of them."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from guard.metrics import GuardMetrics

from .support import (
    DEPLOY,
    DOCS,
    REPO,
    exported_families,
    exported_names,
    find_key,
    promql_metric_names,
    require_binary,
    unknown_metrics,
)

DASHBOARD = DEPLOY / "grafana" / "refusal-guard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
# Series Prometheus itself adds to every scrape; the dashboard and alerts may read them.
PROMETHEUS_SERIES = frozenset({"up"})

# What the operations issue asks the dashboard to show, by panel title.
REQUIRED_PANELS = (
    "Decisions by decision and mode",
    "Blocks, rewrites and flags by category",
    "Replies by refusal type",
    "Over-refusals by category",
    "Leaks stopped",
    "Capitulations",
    "Escalations",
    "Forged or pruned history",
    "Observe mode: would do vs did",
    "Classifier latency",
    "Classifier batch size",
    "Upstream latency",
    "Guard added latency",
    "Stream hold-back",
    "State store",
    "Policy reloads",
    "Active policy",
)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def known() -> frozenset[str]:
    return exported_names(GuardMetrics(CollectorRegistry()).registry) | PROMETHEUS_SERIES


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression and template query, wherever it sits in the JSON."""
    queries = [e for e in find_key(dashboard, "expr") if isinstance(e, str)]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def _alert_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


# -------------------------------------------------------------------------- name checks


def test_suffix_rules_match_what_a_scrape_exposes() -> None:
    """The exported-name list (used below) is what prometheus_client actually writes."""
    metrics = GuardMetrics(CollectorRegistry())
    metrics.over_refusals.labels(category="hate").inc()  # the one open label set
    metrics.policy_info.info({"version": "abc", "mode": "observe"})
    families = exported_families(metrics.registry)
    for family in metrics.registry.collect():
        assert family.samples, f"{family.name} exposes no series on a fresh registry"
        for sample in family.samples:
            assert sample.name in families[family.name], (family.name, sample.name)


def test_extractor_finds_metric_names_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, stage) (rate(guard_a_bucket{x=~"$instance"}'
        "[$__rate_interval]))) / on (instance) group_left sum without (op) (b offset 1d)"
        ' > bool 0.5 and absent(up{job="refusal-guard"}) unless max_over_time(c[1h:5m])'
    )
    assert promql_metric_names(expr) == {"guard_a_bucket", "b", "up", "c"}
    assert promql_metric_names("label_values(guard_requests_total, instance)") == {
        "guard_requests_total"
    }


def test_a_renamed_metric_is_reported(known: frozenset[str]) -> None:
    expr = "sum(rate(guard_requests_total[5m]))"
    assert unknown_metrics([expr], known) == {}
    assert unknown_metrics([expr], known - {"guard_requests_total"}) == {
        expr: {"guard_requests_total"}
    }


def test_dashboard_reads_only_exported_metrics(
    dashboard: dict[str, Any], known: frozenset[str]
) -> None:
    queries = _dashboard_queries(dashboard)
    assert len(queries) > 20
    assert unknown_metrics(queries, known) == {}


def test_alert_rules_read_only_exported_metrics(known: frozenset[str]) -> None:
    assert unknown_metrics(_alert_exprs(), known) == {}


def test_dashboard_shows_every_exported_metric(dashboard: dict[str, Any]) -> None:
    used = frozenset().union(*(promql_metric_names(q) for q in _dashboard_queries(dashboard)))
    families = exported_families(GuardMetrics(CollectorRegistry()).registry)
    unshown = sorted(name for name, samples in families.items() if not samples & used)
    assert unshown == []


def test_dashboard_queries_are_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool parses each query (Grafana's variables replaced by plausible values)."""
    promtool = require_binary("promtool", "prometheus")
    substitutions = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h",
                     "$instance": ".*"}  # fmt: skip
    rules = []
    for index, expr in enumerate(find_key(dashboard, "expr")):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unhandled Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    rule_file = tmp_path / "dashboard-rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(rule_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- structure


def test_dashboard_has_the_panels_operators_need(dashboard: dict[str, Any]) -> None:
    titles = {p["title"] for p in _panels(dashboard)}
    assert sorted(set(REQUIRED_PANELS) - titles) == []


def test_panels_are_well_formed(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
    for panel in _panels(dashboard):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel.get("description"), f"{panel['title']}: says nothing about itself"
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_every_panel_is_explained_in_the_operations_doc(dashboard: dict[str, Any]) -> None:
    doc = DOCS.read_text(encoding="utf-8")
    missing = [p["title"] for p in _panels(dashboard) if f"**{p['title']}**" not in doc]
    assert missing == []


def test_provisioning_loads_the_dashboard_from_where_compose_mounts_it() -> None:
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "refusal-guard.yaml").read_text()
    )
    (only,) = provider["providers"]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = dict(
        re.match(r"^(.+?):(.+?)(?::ro)?$", volume).groups()  # type: ignore[union-attr]
        for volume in compose["services"]["grafana"]["volumes"]
    )
    target = mounts["./grafana/refusal-guard.json"]
    assert Path(target).parent == Path(only["options"]["path"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    sources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    (prometheus,) = sources["datasources"]
    assert prometheus["type"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]


def test_every_exported_metric_is_recorded_by_the_guard() -> None:
    """No dashboard panel watches a metric nothing records (metrics.py adds none unused)."""
    metrics = GuardMetrics(CollectorRegistry())
    attributes = [
        name
        for name, value in vars(metrics).items()
        if isinstance(value, Counter | Gauge | Histogram | Info)
    ]
    sources = "\n".join(
        path.read_text(encoding="utf-8")
        for path in (REPO / "guard").rglob("*.py")
        if path.name != "metrics.py" and "training" not in path.parts
    )
    unrecorded = [
        name
        for name in attributes
        if not re.search(rf"\.{name}\s*\.\s*(labels|inc|dec|set|observe|info)\(", sources)
    ]
    assert len(attributes) == len(exported_families(metrics.registry))
    assert unrecorded == []
