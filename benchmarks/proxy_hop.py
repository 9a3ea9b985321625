"""What the guard's hop costs: latency added over a direct call, next to nginx as the floor.

Starts, each in its own process: a fast local upstream (a raw ASGI app under uvicorn),
the guard in front of it (the real sidecar app with the zero-cost KeywordScorer, so this
measures the hop, not a model) once per upstream client asked for (``--client``: "guard"
is the native client, "guard-httpx" the httpx one), and nginx as a plain reverse proxy
(temp config).  Then drives each with ``wrk`` at concurrency 1 and 32, for a pass-through
GET and a judged chat completion POST, and prints p50/p99, requests/second and the p50
added over direct.

    python3 benchmarks/proxy_hop.py --duration 3 --rounds 3 --out benchmarks/results/proxy_hop.json

Needs ``wrk`` and ``nginx`` (Debian: ``apt-get install wrk nginx-light``).  About 2.5 minutes
with the defaults (both clients), under 2 with one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CHAT_BODY = json.dumps(
    {"model": "bench", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
)
MODELS = json.dumps({"object": "list", "data": [{"id": "bench", "object": "model"}]}).encode()
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris is the capital of France."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
    }
).encode()

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def upstream_app(scope: Scope, receive: Receive, send: Send) -> None:
    """As fast as an HTTP server in Python gets: read the body, answer fixed JSON."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = COMPLETION if scope["path"].endswith("/chat/completions") else MODELS
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve_upstream(port: int) -> None:
    import uvicorn

    uvicorn.run(
        upstream_app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


def serve_guard(port: int, upstream_port: int, client: str) -> None:
    import uvicorn

    from guard.decisions import Mode
    from guard.engine import Engine
    from guard.logs import configure_logging
    from guard.proxy import create_app
    from guard.settings import load_settings
    from guard.testing import KeywordScorer

    settings = load_settings(
        overrides={
            "upstream": {"url": f"http://127.0.0.1:{upstream_port}", "client": client},
            "server": {"port": port},
        },
        environ={},
    )
    configure_logging(settings.logging)  # info: the request_completed line is real cost
    app = create_app(settings, engine=Engine(KeywordScorer(), mode=Mode.ENFORCE))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=False,
        lifespan="on",
    )


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream llm {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://llm;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(port: int, path: str = "/v1/models", timeout: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port}")


@contextmanager
def process(args: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Run:
    target: str
    route: str
    concurrency: int
    p50_ms: float  # median over rounds of each round's p50
    p99_ms: float  # median over rounds of each round's p99
    requests_per_s: float  # mean over rounds
    requests: int
    errors: int
    # CPU time per request of the process(es) the client talks to: the proxy, or for
    # "direct" the upstream itself (the same upstream serves every target).
    cpu_us_per_request: float | None


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_TICK = os.sysconf("SC_CLK_TCK")


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (nginx's workers)."""
    total = 0.0
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total += (int(stat[11]) + int(stat[12])) / _TICK
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        for child in children.read_text().split():
            total += cpu_seconds(int(child))
    return total


def wrk(url: str, concurrency: int, duration: int, script: Path | None) -> dict[str, float]:
    args = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--latency"]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    if set(percentiles) != {"50", "99"}:
        raise RuntimeError(f"unreadable wrk output:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "p50": _ms(percentiles["50"]),
        "p99": _ms(percentiles["99"]),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": requests,
        "errors": (int(errors.group(1)) if errors else 0) + (1 if socket_errors else 0),
    }


GUARD_TARGETS = {"native": "guard", "httpx": "guard-httpx"}  # upstream client -> target


def measure(
    duration: int, rounds: int, clients: list[str]
) -> tuple[list[Run], dict[str, dict[str, float]]]:
    """Every (route, concurrency) runs each target once per round, interleaved, so a
    neighbour's load on this shared machine hits all targets alike."""
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install wrk nginx-light")
    up, nginx = free_port(), free_port()
    guards = {client: free_port() for client in clients}
    me = [sys.executable, str(Path(__file__).resolve())]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, upstream=up, port=nginx))
        post = Path(tmp) / "post.lua"
        post.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(CHAT_BODY)}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            'wrk.headers["Authorization"] = "Bearer sk-bench"\n'
        )
        with ExitStack() as running:
            upstream_proc = running.enter_context(
                process([*me, "--role", "upstream", "--port", str(up)])
            )
            nginx_proc = running.enter_context(process(["nginx", "-c", str(conf), "-p", tmp]))
            targets = {"direct": (up, upstream_proc.pid), "nginx": (nginx, nginx_proc.pid)}
            for client, port in guards.items():
                role = ["--role", "guard", "--port", str(port), "--upstream-port", str(up)]
                guard_proc = running.enter_context(process([*me, *role, "--client", client]))
                targets[GUARD_TARGETS[client]] = (port, guard_proc.pid)
            for port, _ in targets.values():
                wait_for(port)
            routes = {
                "GET /v1/models (pass-through)": ("/v1/models", None),
                "POST /v1/chat/completions (judged)": ("/v1/chat/completions", post),
            }
            for route, (path, script) in routes.items():
                for port, _ in targets.values():
                    wrk(f"http://127.0.0.1:{port}{path}", 4, 1, script)  # warm pools and caches
                for concurrency in (1, 32):
                    results: dict[str, list[dict[str, float]]] = {t: [] for t in targets}
                    for _ in range(rounds):
                        for target, (port, pid) in targets.items():
                            before = cpu_seconds(pid) if pid else 0.0
                            result = wrk(
                                f"http://127.0.0.1:{port}{path}", concurrency, duration, script
                            )
                            result["cpu"] = cpu_seconds(pid) - before if pid else 0.0
                            results[target].append(result)
                    for target, (_, pid) in targets.items():
                        runs.append(_summarise(target, route, concurrency, results[target], pid))
                        _print(runs[-1])
            engine_ms = {GUARD_TARGETS[c]: engine_time_ms(port) for c, port in guards.items()}
    print(
        f"  engine time per judged request (guard_overhead_seconds): {engine_ms}", file=sys.stderr
    )
    return runs, engine_ms


def engine_time_ms(port: int) -> dict[str, float]:
    """Mean time in the engine per judged request, by direction, from the guard's metrics."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    values = {
        (name, direction): float(value)
        for name, direction, value in re.findall(
            r'^guard_overhead_seconds_(sum|count)\{direction="(\w+)"\} (\S+)$', text, re.MULTILINE
        )
    }
    return {
        direction: round(values[("sum", direction)] / values[("count", direction)] * 1000, 3)
        for (kind, direction) in values
        if kind == "count" and values[("count", direction)]
    }


def _summarise(
    target: str, route: str, concurrency: int, results: list[dict[str, float]], pid: int | None
) -> Run:
    requests = int(sum(r["requests"] for r in results))
    cpu = sum(r["cpu"] for r in results)
    return Run(
        target=target,
        route=route,
        concurrency=concurrency,
        p50_ms=statistics.median(r["p50"] for r in results),
        p99_ms=statistics.median(r["p99"] for r in results),
        requests_per_s=statistics.fmean(r["rps"] for r in results),
        requests=requests,
        errors=int(sum(r["errors"] for r in results)),
        cpu_us_per_request=cpu / requests * 1e6 if pid and requests else None,
    )


def _print(run: Run) -> None:
    cpu = f" cpu={run.cpu_us_per_request:.0f} us/req" if run.cpu_us_per_request else ""
    print(
        f"  {run.target:6} {run.route:36} c={run.concurrency:<2} p50={run.p50_ms:.3f} ms "
        f"p99={run.p99_ms:.3f} ms {run.requests_per_s:.0f} req/s{cpu}",
        file=sys.stderr,
    )


def table(runs: list[Run]) -> str:
    direct = {(r.route, r.concurrency): r for r in runs if r.target == "direct"}
    lines = [
        "| route | target | conc. | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s |"
        " CPU us/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        base = direct[(r.route, r.concurrency)]
        added = "-" if r.target == "direct" else f"{r.p50_ms - base.p50_ms:+.3f}"
        added99 = "-" if r.target == "direct" else f"{r.p99_ms - base.p99_ms:+.3f}"
        cpu = f"{r.cpu_us_per_request:.0f}" if r.cpu_us_per_request else "-"
        lines.append(
            f"| {r.route} | {r.target} | {r.concurrency} | {r.p50_ms:.3f} | "
            f"{r.p99_ms:.3f} | {added} | {added99} | {r.requests_per_s:.0f} | {cpu} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per target")
    parser.add_argument("--out", type=Path, help="write the runs as JSON here")
    parser.add_argument(
        "--client",
        choices=("native", "httpx", "both"),
        default="both",
        help="the guard's upstream client(s) to measure, side by side (default both)",
    )
    parser.add_argument("--role", choices=("upstream", "guard"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "upstream":
        serve_upstream(args.port)
        return 0
    if args.role == "guard":
        serve_guard(args.port, args.upstream_port, args.client)
        return 0
    clients = ["native", "httpx"] if args.client == "both" else [args.client]
    load = os.getloadavg()
    runs, engine_ms = measure(args.duration, args.rounds, clients)
    if any(run.errors for run in runs):
        print("some requests failed; figures are not valid", file=sys.stderr)
        return 1
    print(table(runs))
    print(f"\nEngine time per judged request (ms, from guard_overhead_seconds): {engine_ms}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "command": " ".join(sys.argv),
            "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
            "load_average_at_start": load,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "clients": clients,
            "engine_ms_per_judged_request": engine_ms,
            "runs": [asdict(run) for run in runs],
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
