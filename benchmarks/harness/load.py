"""Closed-loop HTTP load with ``wrk`` (C, epoll, one thread), for latency and throughput.

Why wrk: on two cores shared with the target, a Python load generator would take a core
of its own and cap the throughput it can measure near the guard's; wrk's single thread
costs a fraction of that at these rates.  Percentiles come from wrk's own latency
histogram through a Lua ``done`` hook (microseconds, not its rounded text output).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness.targets import Target

_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,' ..
    '"p50_us":%.1f,"p99_us":%.1f,"mean_us":%.1f,"max_us":%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""

_UNIQUE_CONVERSATIONS = r"""
local counter = 0
local prefix = "{prefix}-"
request = function()
  counter = counter + 1
  wrk.headers["{header}"] = prefix .. counter
  return wrk.format()
end
"""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: latency percentiles in milliseconds, throughput, failures."""

    target: str
    concurrency: int
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    failures: int  # non-2xx/3xx plus socket errors


def lua_script(body: str | None, headers: dict[str, str], unique_header: str | None = None) -> str:
    """A wrk script POSTing ``body`` (GET when None); ``unique_header`` varies per request."""
    if body is None:
        lines = ['wrk.method = "GET"']
    else:
        lines = [
            'wrk.method = "POST"',
            f"wrk.body = {json.dumps(body)}",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    script = "\n".join(lines) + "\n"
    if unique_header:
        # Lua's unseeded math.random repeats across runs; the prefix comes from here instead.
        script += _UNIQUE_CONVERSATIONS.replace("{header}", unique_header).replace(
            "{prefix}", uuid.uuid4().hex
        )
    return script + _DONE


def wrk(
    target: Target,
    body: str | None,
    *,
    concurrency: int,
    duration_s: float,
    unique_header: str | None = None,
    timeout_s: float = 10,
    path: str = "/v1/chat/completions",
) -> WrkResult:
    """Drive ``target``'s chat endpoint with ``concurrency`` connections for ``duration_s``."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua_script(body, target.headers, unique_header))
    try:
        args = [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(duration_s))}s",
            f"--timeout={timeout_s}s",
            "-s",
            script.name,
            target.url(path),
        ]
        out = subprocess.run(
            args, capture_output=True, text=True, check=True, timeout=duration_s + timeout_s + 30
        ).stdout
    finally:
        Path(script.name).unlink()
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out[-500:]}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    return WrkResult(
        target=target.name,
        concurrency=concurrency,
        requests=raw["requests"],
        requests_per_s=raw["requests"] / (raw["duration_us"] / 1e6),
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        failures=raw["status_errors"] + raw["socket_errors"],
    )
