"""Speed side by side: direct, nginx, the guard (observe, enforce) and LiteLLM, one run.

Every target runs in its own bounded process on 127.0.0.1 in front of the same fake
upstream (:mod:`benchmarks.harness`).  Tables (``--tables``):

* ``latency``: non-streaming p50/p99 and added latency over direct at each concurrency,
  and the maximum requests per second (best median over the concurrencies), by wrk.
* ``stream``: time to first token and gaps between content events, streamed replies.
* ``turns``: the full guard (enforce) against conversation length, history in each
  request with an explicit conversation id; each body also timed direct.
* ``memory``: the guard's resident size at start and with ``--fill`` conversations held.

Figures are medians over ``--repeats`` (targets interleaved within each repeat so drift
hits all alike); added latencies are medians of same-repeat differences.

    benchmarks/setup_peers.sh      # LiteLLM venv + matplotlib, once
    python3 -m benchmarks.gateways --out benchmarks/results/gateways.json
    python3 -m benchmarks.report benchmarks/results/gateways.json   # tables + plots
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import clients, procmem, targets
from benchmarks.harness.load import NumberedBody, WrkResult, wrk
from benchmarks.harness.upstream import Chunking

ALL_TARGETS = ["direct", "nginx", "guard-observe", "guard-enforce", "guard-enforce-hold", "litellm"]
# Not in the default run: guard-enforce-forwarding (with --first-ms), guard-enforce-httpx.
HOLD = "guard-enforce-hold"  # streams only: non-streaming replies are judged whole anyway
ALL_TABLES = ["latency", "hop", "stream", "turns", "memory"]


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _measured(
    target: targets.Target,
    body: NumberedBody | None,
    concurrency: int,
    duration_s: float,
    path: str = "/v1/chat/completions",
) -> tuple[float, WrkResult]:
    """One wrk run, with the target's CPU milliseconds per request over it."""
    before = procmem.tree_cpu_s(target.root_pid) if target.root_pid else float("nan")
    result = wrk(target, body, concurrency=concurrency, duration_s=duration_s, path=path)
    after = procmem.tree_cpu_s(target.root_pid) if target.root_pid else float("nan")
    return 1000 * (after - before) / max(1, result.requests), result


def latency(ts: dict[str, targets.Target], args: argparse.Namespace) -> list[dict[str, Any]]:
    whole = [target for name, target in ts.items() if name != HOLD]
    for target in whole:
        wrk(target, NumberedBody.fresh(), concurrency=4, duration_s=2)  # warm pools, model
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for concurrency in args.concurrency:
            for target in whole:
                body = NumberedBody.fresh()  # every request a new user turn, scored afresh
                cpu_ms, result = _measured(target, body, concurrency, args.duration)
                _log(
                    f"latency r{repeat} c={concurrency} {target.name}: p50 {result.p50_ms:.3f} "
                    f"p99 {result.p99_ms:.3f} ms, {result.requests_per_s:.0f} req/s, "
                    f"{cpu_ms:.3f} cpu-ms/req, {result.failures} failed"
                )
                runs.append({"repeat": repeat, **asdict(result), "cpu_ms_per_request": cpu_ms})
    return runs


def hop(ts: dict[str, targets.Target], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Issue 2's pass-through hop: ``GET /v1/models`` relayed untouched (no judging).

    LiteLLM answers /v1/models from its own config without calling the upstream, so it is
    no pass-through and is left out.
    """
    hop_names = ("direct", "nginx", "guard-enforce", "guard-enforce-httpx")
    hop_targets = [t for name, t in ts.items() if name in hop_names]
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for concurrency in (1, 32):
            for target in hop_targets:
                cpu_ms, result = _measured(target, None, concurrency, 2, path="/v1/models")
                _log(
                    f"hop r{repeat} c={concurrency} {target.name}: p50 {result.p50_ms:.3f} ms, "
                    f"{result.requests_per_s:.0f} req/s, {cpu_ms:.3f} cpu-ms/req"
                )
                runs.append({"repeat": repeat, **asdict(result), "cpu_ms_per_request": cpu_ms})
    return runs


def stream(ts: dict[str, targets.Target], args: argparse.Namespace) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for target in ts.values():
            summary = clients.stream_summary(target, args.streams)
            _log(
                f"stream r{repeat} {target.name}: ttft {summary.first_token_p50_ms:.2f} ms, "
                f"gap p50 {summary.gap_p50_ms:.2f} ms, {summary.events_per_stream:.1f} events"
            )
            runs.append({"repeat": repeat, **asdict(summary)})
    return runs


def turns(ts: dict[str, targets.Target], args: argparse.Namespace) -> list[dict[str, Any]]:
    guard = ts["guard-enforce"]
    longest = max(args.turns)
    runs: list[dict[str, Any]] = []
    # One kept-alive connection to each for every conversation (none pays a handshake).
    with httpx.Client(timeout=60) as to_guard, httpx.Client(timeout=60) as to_direct:
        for index in range(args.conversations):
            timings = clients.conversation(guard, ts["direct"], longest, (to_guard, to_direct))
            for timing in timings:
                if timing.turn in args.turns:
                    runs.append({"conversation": index, **asdict(timing)})
            kept = {t.turn: t for t in timings}
            _log(
                f"turns conversation {index}: "
                + ", ".join(
                    f"t{n} {kept[n].guard_ms - kept[n].direct_ms:.2f} ms added" for n in args.turns
                )
            )
    return runs


def memory(args: argparse.Namespace, lifetime_s: int) -> dict[str, Any]:
    """Guard RSS: idle at start, warm, filled over HTTP (time-capped), and prefilled.

    The HTTP fill is the real path (one-turn conversations with fresh explicit ids) for
    ``--fill-max-s`` seconds; a second guard process stores ``--fill`` conversations at
    start-up through the memory's own calls (:mod:`benchmarks.harness.guard_server`),
    since 100,000 HTTP requests would take minutes on two cores.
    """
    with tempfile.TemporaryDirectory(prefix="guard-bench-mem-") as tmp_name:
        tmp = Path(tmp_name)
        with targets.upstream(tmp, Chunking(), lifetime_s) as up:
            with targets.guard(tmp, up, "enforce", args.scorer, lifetime_s) as guard:
                assert guard.pid is not None
                time.sleep(1)
                at_start = procmem.rss_mib(guard.pid)
                wrk(guard, NumberedBody.fresh(), concurrency=4, duration_s=2)
                warm = procmem.rss_mib(guard.pid)
                warm_held = procmem.conversations_held(guard)
                fill = procmem.fill_conversations(
                    guard, args.fill, max_s=args.fill_max_s, step_s=args.fill_max_s / 3
                )
                filled = procmem.rss_mib(guard.pid)
            started = time.monotonic()
            with targets.guard(
                tmp, up, "enforce", args.scorer, lifetime_s, prefill=args.fill
            ) as prefilled:
                assert prefilled.pid is not None
                prefill_s = time.monotonic() - started
                pre_start = procmem.rss_mib(prefilled.pid)
                wrk(prefilled, NumberedBody.fresh(), concurrency=4, duration_s=2)
                pre_warm = procmem.rss_mib(prefilled.pid)
                pre_held = procmem.conversations_held(prefilled)
    _log(
        f"memory: {at_start:.1f} MiB at start, {warm:.1f} warm, {filled:.1f} MiB with "
        f"{fill.conversations} conversations over HTTP ({fill.seconds:.0f} s); {pre_warm:.1f} "
        f"MiB with {pre_held} prefilled"
    )
    return {
        "rss_start_mib": at_start,
        "rss_warm_mib": warm,
        "warm_conversations": warm_held,
        "rss_filled_mib": filled,
        **asdict(fill),
        "prefill_launcher": (
            f"python3 -m benchmarks.harness.guard_server --scorer {args.scorer} "
            f"--prefill {args.fill}"
        ),
        "prefill_seconds": prefill_s,
        "prefilled_rss_start_mib": pre_start,
        "prefilled_rss_warm_mib": pre_warm,
        "prefilled_conversations": pre_held,
    }


def _model_version() -> str:
    labels = json.loads((targets.MODEL_FILE.parent / "labels.json").read_text())
    return f"{labels.get('model_version', '?')} (sha256 {labels.get('model_sha256', '?')[:12]})"


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    versions = {}
    for tool, cmd in {"nginx": ["nginx", "-v"], "wrk": ["wrk", "-v"]}.items():
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        versions[tool] = (done.stdout + done.stderr).strip().splitlines()[0]
    litellm = targets.LITELLM.parent / "python"
    if litellm.exists():
        versions["litellm"] = subprocess.run(
            [str(litellm), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average": os.getloadavg(),
        **versions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(ALL_TARGETS))
    parser.add_argument("--tables", default=",".join(ALL_TABLES))
    default_scorer = "onnx" if targets.MODEL_FILE.exists() else "keyword"
    parser.add_argument(
        "--scorer",
        choices=("onnx", "keyword"),
        default=default_scorer,
        help=f"the guard's classifier (default here: {default_scorer})",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--concurrency", type=_ints, default=[1, 16, 32, 64])
    parser.add_argument("--streams", type=int, default=15, help="streams per target per repeat")
    parser.add_argument("--chunk-chars", type=int, default=Chunking.chars)
    parser.add_argument("--chunk-delay-ms", type=float, default=Chunking.delay_ms)
    parser.add_argument(
        "--first-ms", type=float, default=Chunking.first_ms, help="the fake model's time to answer"
    )
    parser.add_argument("--turns", type=_ints, default=[1, 10, 50, 200])
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--fill", type=int, default=100_000)
    parser.add_argument("--fill-max-s", type=float, default=45, help="HTTP fill time cap")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gateways.json"))
    args = parser.parse_args(argv)
    names = args.targets.split(",")
    tables = args.tables.split(",")
    lifetime_s = 1800
    report: dict[str, Any] = {
        # GUARD_* variables reach the guards' settings, so they are part of the command.
        "command": " ".join(
            [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("GUARD_")]
            + ["python3 -m benchmarks.gateways", *(sys.argv[1:] if argv is None else argv)]
        ),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "scorer": args.scorer,
        "model": _model_version() if args.scorer == "onnx" else None,
        "guard_launcher": targets.launcher(args.scorer),
        "concurrency": args.concurrency,
        "repeats": args.repeats,
        "duration_s": args.duration,
        "chunking": asdict(Chunking(args.chunk_chars, args.chunk_delay_ms, args.first_ms)),
        "targets": names,
    }
    chunking = Chunking(args.chunk_chars, args.chunk_delay_ms, args.first_ms)
    needs_targets = [t for t in ("latency", "hop", "stream", "turns") if t in tables]
    if needs_targets:
        with targets.all_targets(
            names, scorer=args.scorer, chunking=chunking, lifetime_s=lifetime_s
        ) as ts:
            if "latency" in tables:
                report["latency"] = latency(ts, args)
            if "hop" in tables:
                report["hop"] = hop(ts, args)
            if "stream" in tables:
                report["stream"] = stream(ts, args)
            if "turns" in tables:
                report["turns"] = turns(ts, args)
            report["guard_counters"] = {
                target.name: procmem.guard_counters(target)
                for name, target in ts.items()
                if name.startswith("guard")
            }
    if "memory" in tables:
        report["memory"] = memory(args, lifetime_s)
    report["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    _log(f"wrote {args.out}")
    failed = sum(run["failures"] for run in report.get("latency", []) + report.get("hop", []))
    if failed:
        _log(f"{failed} requests failed during the latency runs: figures are not valid")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
