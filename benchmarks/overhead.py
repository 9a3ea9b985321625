"""Where enforce mode's added latency at concurrency 1 goes: the guard's own clocks, side by side.

    python3 -m benchmarks.overhead --requests 400 --rounds 3 --out benchmarks/results/overhead.json

One client sends benign one-turn chat requests (the benchmarks' 64-token user turn, a fresh
one each time) one after another over a kept-alive connection, in rounds that alternate
between the fake upstream directly and the guard in enforce mode with the shipped model.
Afterwards the guard's Prometheus histograms say where its time went per request (means):
the whole request, the classifier pass as the engine awaited it (thread hand-off included),
the rest of the request side, the reply side and the upstream call.  The same turns are
then scored in this process, directly on the calling thread and through the async scorer
(its batcher and inference thread), alternating, to show what the hand-off itself costs.

``--pin`` runs the guard on CPU 1 and the client and upstream on CPU 0 (``sched_setaffinity``;
two cores or more): the same requests with the guard's two threads never sharing a core with
the client or the upstream, nor moving between cores.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import payload, targets
from benchmarks.harness.stats import median
from benchmarks.harness.upstream import Chunking

HISTOGRAMS = {
    "request_ms": ("guard_request_duration_seconds", 'route="chat"'),
    "classifier_ms": ("guard_classifier_duration_seconds", 'stage="prompt"'),
    "request_side_ms": ("guard_overhead_seconds", 'direction="request"'),
    "reply_side_ms": ("guard_overhead_seconds", 'direction="reply"'),
    "upstream_ms": ("guard_upstream_duration_seconds", ""),
}


def serial(port: int, count: int) -> list[float]:
    """Milliseconds per request for ``count`` requests, one at a time, one connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
    times = []
    try:
        for _ in range(count):
            body = payload.single_turn()
            started = time.perf_counter()
            conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
            reply = conn.getresponse()
            reply.read()
            times.append((time.perf_counter() - started) * 1000)
            if reply.status != 200:
                raise RuntimeError(f"port {port} answered {reply.status}")
    finally:
        conn.close()
    return times


def guard_totals(port: int) -> dict[str, tuple[float, float]]:
    """The guard's :data:`HISTOGRAMS` as (sum in seconds, count), read from its /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return parse_totals(text)


def parse_totals(text: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of each of :data:`HISTOGRAMS` in Prometheus text exposition."""
    totals = {}
    for key, (name, labels) in HISTOGRAMS.items():
        selector = re.escape("{" + labels + "}" if labels else "")
        found = {
            part: float(m.group(1))
            for part in ("sum", "count")
            if (m := re.search(rf"^{name}_{part}{selector} (\S+)$", text, re.M))
        }
        totals[key] = (found["sum"], found["count"])
    return totals


def means_between(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Mean milliseconds per observation made between two :func:`guard_totals` readings."""
    return {
        key: 1000 * (after[key][0] - before[key][0]) / max(after[key][1] - before[key][1], 1.0)
        for key in after
    }


def in_process(count: int) -> dict[str, float]:
    """p50 ms of the same turns scored directly and through the async scorer, alternating."""
    from guard.classifier import OnnxScorer
    from guard.settings import Settings

    scorer = OnnxScorer.from_settings(Settings().classifier)
    predictor = scorer.predictor

    async def run() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {"direct": [], "async": []}
        for _ in range(count):
            text = payload.fresh_user_text()
            started = time.perf_counter()
            predictor.score_prompts([text])
            times["direct"].append((time.perf_counter() - started) * 1000)
            text = payload.fresh_user_text()
            started = time.perf_counter()
            await scorer.score_prompts([text])
            times["async"].append((time.perf_counter() - started) * 1000)
        await scorer.aclose()
        return times

    times = asyncio.run(run())
    return {f"{key}_p50_ms": median(values) for key, values in times.items()}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    pin = args.pin and len(os.sched_getaffinity(0)) >= 2
    everywhere = os.sched_getaffinity(0)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="guard-bench-overhead-") as tmp, ExitStack() as stack:
        if pin:
            os.sched_setaffinity(0, {0})  # the upstream inherits this
        up = stack.enter_context(targets.upstream(Path(tmp), Chunking(), 1800))
        if pin:
            os.sched_setaffinity(0, {1})  # the guard inherits this
        guard = stack.enter_context(targets.guard(Path(tmp), up, "enforce", "onnx", 1800))
        if pin:
            os.sched_setaffinity(0, {0})
        serial(guard.port, 50)  # warm-up, not counted below
        before = guard_totals(guard.port)
        for _ in range(args.rounds):
            direct = median(serial(up.port, args.requests // 2))
            guarded = median(serial(guard.port, args.requests))
            rounds.append({"direct_p50_ms": direct, "guard_p50_ms": guarded,
                           "added_p50_ms": guarded - direct})  # fmt: skip
        means = means_between(before, guard_totals(guard.port))
    os.sched_setaffinity(0, everywhere)
    return {
        "pinned": pin,
        "rounds": rounds,
        "added_p50_ms": median(r["added_p50_ms"] for r in rounds),
        "guard_means_ms": means,
        "in_process": in_process(args.requests),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="guard requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pin", action="store_true", help="guard on CPU 1, the rest on CPU 0")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = {
        "command": "python3 -m benchmarks.overhead " + " ".join(argv or sys.argv[1:]),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **measure(args),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
