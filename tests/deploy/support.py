"""Shared pieces of the deployment tests: paths, external binaries, free ports, PromQL names."""

from __future__ import annotations

import os
import re
import shutil
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCS = REPO / "docs" / "operations.md"


def require_binary(name: str, package: str) -> str:
    """Path of ``name``; skip when missing locally, fail when ``CI`` is set."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not on PATH (Debian: apt-get install {package})"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so this test must run")
    pytest.skip(reason)


def free_port() -> int:
    """A port free right now on 127.0.0.1, for servers that cannot take a bound socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_key(node: Any, key: str) -> Iterator[Any]:
    """Every value stored under ``key`` anywhere in a JSON/YAML tree."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key:
                yield value
            yield from find_key(value, key)
    elif isinstance(node, list):
        for item in node:
            yield from find_key(item, key)


# ------------------------------------------------------------------------- metric names

# Sample names each metric type exposes, by family type as prometheus_client reports it
# (counters' family names have ``_total`` stripped; an Info ``x`` exposes ``x_info``).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def exported_families(registry: CollectorRegistry) -> dict[str, frozenset[str]]:
    """Family name -> the sample names Prometheus can scrape for it."""
    families: dict[str, frozenset[str]] = {}
    for family in registry.collect():
        if family.type not in _SUFFIXES:
            raise AssertionError(f"{family.name}: no suffix rule for metric type {family.type}")
        families[family.name] = frozenset(family.name + s for s in _SUFFIXES[family.type])
    return families


def exported_names(registry: CollectorRegistry) -> frozenset[str]:
    return frozenset().union(*exported_families(registry).values())


# PromQL is small enough to strip down to its metric names: remove string literals, label
# matchers, range/subquery brackets and label lists of by/without/on/ignoring/group_*;
# what is left is numbers, operators, keywords, function names (followed by "(") and
# metric names.
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_TOKENS = re.compile(r"\d[\w.]*|[A-Za-z_:][\w:]*(?P<call>\s*\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan",
     "by", "without", "on", "ignoring"}
)  # fmt: skip
# Grafana's `label_values(selector, label)` template query is not PromQL.
_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<selector>.*),)?\s*\w+\s*\)\s*$")


def promql_metric_names(expr: str) -> frozenset[str]:
    """Metric names an expression (or Grafana template query) reads."""
    template = _LABEL_VALUES.match(expr)
    if template is not None:
        expr = template.group("selector") or ""
    stripped = _STRINGS.sub('""', expr)
    stripped = _MATCHERS.sub(" ", stripped)
    stripped = _BRACKETS.sub(" ", stripped)
    stripped = _LABEL_LISTS.sub(" ", stripped)
    names = set()
    for token in _TOKENS.finditer(stripped):
        word = token.group(0)
        if word[0].isdigit() or token.group("call") or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return frozenset(names)


def unknown_metrics(exprs: Iterable[str], known: frozenset[str]) -> dict[str, frozenset[str]]:
    """Expression -> the metric names in it that ``known`` lacks (empty when all is well)."""
    problems = {}
    for expr in exprs:
        missing = promql_metric_names(expr) - known
        if missing:
            problems[expr] = missing
    return problems
