"""A target's resident memory, and filling the guard's conversation store over HTTP."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness.clients import CONVERSATION_HEADER
from benchmarks.harness.load import NumberedBody, wrk
from benchmarks.harness.targets import Target


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` in MiB (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no VmRSS for pid {pid}")
    return int(match.group(1)) / 1024


def conversations_held(target: Target) -> int:
    """The guard's ``guard_conversations`` gauge, read from its /metrics."""
    text = httpx.get(target.url("/metrics"), timeout=10).text
    match = re.search(r"^guard_conversations\s+([\d.e+]+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


def guard_counters(target: Target) -> dict[str, Any]:
    """Chat requests, decisions and scoring failures so far, from the guard's /metrics.

    Scoring that times out under load takes the policy's failure path instead of the
    model's judgement; this shows whether the figures were taken with classification on.
    """
    text = httpx.get(target.url("/metrics"), timeout=10).text
    decisions: dict[str, float] = {}
    chat = failures = 0.0
    for line in text.splitlines():
        if line.startswith("guard_decisions_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            key = f"{labels.get('direction')}/{labels.get('decision')}"
            decisions[key] = decisions.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        elif line.startswith("guard_requests_total{") and 'route="chat"' in line:
            chat += float(line.rsplit(" ", 1)[1])
        elif line.startswith("guard_scoring_failures_total{"):
            failures += float(line.rsplit(" ", 1)[1])
    return {"chat_requests": chat, "decisions": decisions, "scoring_failures": failures}


@dataclass(frozen=True)
class Fill:
    """The store filled over HTTP: how many conversations it holds and what that took."""

    conversations: int
    requests: int
    seconds: float
    failures: int


def fill_conversations(
    target: Target, wanted: int, *, max_s: float, concurrency: int = 32, step_s: float = 10
) -> Fill:
    """Send one-turn conversations, each with a fresh explicit id, until ``wanted`` are held.

    Stops at ``max_s`` seconds whatever the count; the caller reports what was reached.
    """
    started = time.monotonic()
    requests = failures = 0
    held = conversations_held(target)
    while held < wanted and time.monotonic() - started < max_s:
        result = wrk(
            target,
            NumberedBody.fresh(),
            concurrency=concurrency,
            duration_s=step_s,
            unique_header=CONVERSATION_HEADER,
        )
        requests += result.requests
        failures += result.failures
        held = conversations_held(target)
    return Fill(held, requests, time.monotonic() - started, failures)


def tree_cpu_s(root: int) -> float:
    """User+system CPU seconds of ``root`` and every live descendant (all threads)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        fields = raw[raw.rindex(")") + 2 :].split()
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, frontier = 0.0, [root]
    while frontier:
        pid = frontier.pop()
        if pid in stats:
            total += stats[pid][1]
        frontier.extend(child for child, (parent, _) in stats.items() if parent == pid)
    return total
