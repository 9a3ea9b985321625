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

from benchmarks.harness import payload
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

_PER_REQUEST = r"""
local counter = 0
local function spaced(n)
  return (string.format("%d", n):gsub("(%d)", "%1 "):sub(1, -2))
end
request = function()
  counter = counter + 1
{lines}
  return wrk.format(nil, nil, nil, {body})
end
"""


@dataclass(frozen=True)
class NumberedBody:
    """A POST body whose user turn is numbered per request: head + spaced(first + k) + tail."""

    head: str
    tail: str
    first: int

    @classmethod
    def fresh(cls) -> NumberedBody:
        return cls(*payload.single_turn_template())


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


def lua_script(
    body: str | NumberedBody | None, headers: dict[str, str], unique_header: str | None = None
) -> str:
    """A wrk script: GET when ``body`` is None, else POST; per-request parts are built in Lua.

    ``unique_header`` gets a fresh value per request (a conversation id, say).
    """
    if body is None:
        lines = ['wrk.method = "GET"']
    else:
        lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
        if isinstance(body, str):
            lines.append(f"wrk.body = {json.dumps(body)}")
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    script = "\n".join(lines) + "\n"
    per_request: list[str] = []
    if unique_header:
        # Lua's unseeded math.random repeats across runs; the prefix comes from here instead.
        prefix = json.dumps(uuid.uuid4().hex + "-")
        per_request.append(f"  wrk.headers[{json.dumps(unique_header)}] = {prefix} .. counter")
    numbered = isinstance(body, NumberedBody)
    if per_request or numbered:
        expr = (
            f"{json.dumps(body.head)} .. spaced({body.first} + counter) .. {json.dumps(body.tail)}"
            if isinstance(body, NumberedBody)
            else "nil"
        )
        script += _PER_REQUEST.replace("{lines}", "\n".join(per_request)).replace("{body}", expr)
    return script + _DONE


def wrk(
    target: Target,
    body: str | NumberedBody | None,
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
