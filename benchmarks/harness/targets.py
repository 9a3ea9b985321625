"""Launchers for every target, each its own bounded process on 127.0.0.1.

Every process runs under ``timeout`` (coreutils) with a lifetime, so it stops by itself
even if the harness is killed; the context managers also stop it on exit.

* upstream: :mod:`benchmarks.harness.upstream` (the fake, fast LLM server)
* nginx: Debian nginx-light as a plain reverse proxy, temp prefix and config,
  ``worker_processes 1`` (one worker, like the guard's single uvicorn process)
* guard: ``python3 -m guard serve`` in observe or enforce mode with the shipped
  ONNX classifier; ``scorer="keyword"`` (or a factory still wiring the placeholder) runs
  :mod:`benchmarks.harness.guard_server`: the same app and parts, scorer chosen
* litellm: LiteLLM's proxy from ``benchmarks/.venv-litellm`` (``setup_peers.sh``)
"""

from __future__ import annotations

import inspect
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.harness.upstream import Chunking

REPO = Path(__file__).resolve().parents[2]
LITELLM = REPO / "benchmarks" / ".venv-litellm" / "bin" / "litellm"
MODEL_FILE = REPO / "models" / "guard.onnx"
POLICIES = REPO / "policies"


class LaunchError(RuntimeError):
    """A target did not come up (its log tail is in the message)."""


@dataclass(frozen=True)
class Target:
    """A running endpoint the load generators can hit."""

    name: str
    port: int
    headers: dict[str, str] = field(default_factory=dict)
    pid: int | None = None  # the serving process itself (for RSS), when known
    root_pid: int | None = None  # the bounded process tree (for CPU time)

    def url(self, path: str = "/v1/chat/completions") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def factory_is_integrated() -> bool:
    """Whether ``guard serve`` builds the real engine (ONNX, memory, policies from settings)."""
    from guard import factory

    return "scorer" in inspect.signature(factory.build_engine).parameters


def launcher(scorer: str) -> str:
    if scorer == "onnx" and factory_is_integrated():
        return "python3 -m guard serve"
    return f"python3 -m benchmarks.harness.guard_server --scorer {scorer}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_http(
    port: int, path: str, timeout_s: float, proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LaunchError(f"exited {proc.returncode} before answering: {_tail(log)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise LaunchError(f"nothing answered on :{port}{path} in {timeout_s:.0f} s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-1500:]
    except OSError:
        return "(no log)"


def _child_pid(pid: int) -> int:
    """The process ``timeout`` started (the one whose RSS counts)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else pid


@contextmanager
def _process(
    args: list[str], *, lifetime_s: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["timeout", "--kill-after=5", str(lifetime_s), *args],
            cwd=REPO,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def upstream(tmp: Path, chunking: Chunking, lifetime_s: int) -> Iterator[Target]:
    port = free_port()
    args = [
        "python3",
        "-m",
        "benchmarks.harness.upstream",
        "--port",
        str(port),
        "--chunk-chars",
        str(chunking.chars),
        "--chunk-delay-ms",
        str(chunking.delay_ms),
        "--first-ms",
        str(chunking.first_ms),
    ]
    log = tmp / "upstream.log"
    with _process(args, lifetime_s=lifetime_s, log=log) as proc:
        _wait_http(port, "/v1/models", 30, proc, log)
        yield Target("direct", port, pid=_child_pid(proc.pid), root_pid=proc.pid)


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream llm {{ server 127.0.0.1:{upstream}; keepalive 128; }}
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


@contextmanager
def nginx(tmp: Path, up: Target, lifetime_s: int) -> Iterator[Target]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    prefix = tmp / "nginx"
    prefix.mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=prefix, upstream=up.port, port=port))
    log = tmp / "nginx.log"
    with _process(
        [binary, "-c", str(conf), "-p", str(prefix)], lifetime_s=lifetime_s, log=log
    ) as proc:
        _wait_http(port, "/v1/models", 30, proc, log)
        yield Target("nginx", port, root_pid=proc.pid)


@contextmanager
def guard(
    tmp: Path,
    up: Target,
    mode: str,
    scorer: str,
    lifetime_s: int,
    *,
    variant: str = "",
    prefill: int = 0,
    client: str = "native",
    settings: dict[str, str] | None = None,
    tag: str = "",
) -> Iterator[Target]:
    """The guard in ``mode``; ``scorer`` is "onnx" (``guard serve``) or "keyword".

    A ``variant`` runs it on a temp copy of the shipped policies with one switch flipped
    (:data:`POLICY_VARIANTS`): "hold" holds benign streams until their first sentence is
    judged too (the shipped policy streams them without a hold; this shows what the hold
    costs); "forwarding" forwards requests while judging them in enforce mode.
    ``prefill`` stores that many conversations before the guard answers
    (:mod:`benchmarks.harness.guard_server`); ``settings`` are ``GUARD_*`` overrides
    (:data:`SETTING_VARIANTS`), named by ``tag``.
    """
    port = free_port()
    env = {"GUARD_LOGGING__LEVEL": "info", "GUARD_UPSTREAM__CLIENT": client, **(settings or {})}
    if variant:
        switch = POLICY_VARIANTS[variant]
        policies = tmp / f"policies-{variant}"
        shutil.copytree(POLICIES, policies, dirs_exist_ok=True)
        shipped = (policies / "global.yaml").read_text()
        flipped = re.sub(rf"{switch}:\s*false", f"{switch}: true", shipped)
        if flipped == shipped:
            raise LaunchError(f"policies/global.yaml has no '{switch}: false' to flip")
        (policies / "global.yaml").write_text(flipped)
        env["GUARD_POLICY__DIR"] = str(policies)
    if scorer == "onnx" and not MODEL_FILE.exists():
        raise LaunchError(f"{MODEL_FILE} is missing: build the model or use --scorer keyword")
    if scorer == "onnx" and factory_is_integrated() and not prefill:
        args = ["python3", "-m", "guard", "serve"]  # exactly what users run
    else:
        args = ["python3", "-m", "benchmarks.harness.guard_server", "--scorer", scorer]
        args += ["--prefill", str(prefill)] if prefill else []
    args += ["--upstream", up.url(""), "--port", str(port), "--mode", mode]
    suffix = f"-{variant or tag}" if variant or tag else ""
    log = tmp / f"guard-{mode}{suffix}.log"
    # The request_completed line per request is part of the real cost; it goes to a file.
    with _process(args, lifetime_s=lifetime_s, log=log, env=env) as proc:
        _wait_http(port, "/healthz", 120 + prefill / 200, proc, log)
        name = f"guard-{mode}{suffix}"
        name += "" if client == "native" else f"-{client}"
        name += "" if scorer == "onnx" else " (keyword scorer)"
        yield Target(name, port, pid=_child_pid(proc.pid), root_pid=proc.pid)


@contextmanager
def litellm(tmp: Path, up: Target, lifetime_s: int) -> Iterator[Target]:
    if not LITELLM.exists():
        raise LaunchError(f"{LITELLM} is missing: run benchmarks/setup_peers.sh")
    port = free_port()
    key = "sk-bench-" + secrets.token_hex(12)
    conf = tmp / "litellm.yaml"
    conf.write_text(
        json.dumps(
            {  # JSON is YAML
                "model_list": [
                    {
                        "model_name": "fake",
                        "litellm_params": {
                            "model": "openai/fake",
                            "api_base": up.url("/v1"),
                            "api_key": "sk-x",
                        },
                    }
                ],
                "litellm_settings": {"telemetry": False},
            }
        )
    )
    env = {
        "LITELLM_MASTER_KEY": key,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "PYTHONPATH": "",
    }
    log = tmp / "litellm.log"
    args = [str(LITELLM), "--config", str(conf), "--host", "127.0.0.1", "--port", str(port)]
    with _process(args, lifetime_s=lifetime_s, log=log, env=env) as proc:
        _wait_http(port, "/health/liveliness", 180, proc, log)
        yield Target("litellm", port, headers={"Authorization": f"Bearer {key}"}, root_pid=proc.pid)


# guard-enforce-httpx: the same guard with upstream.client httpx instead of the native pool.
GUARD_TARGETS = (
    "guard-observe",
    "guard-enforce",
    "guard-enforce-hold",
    "guard-enforce-forwarding",
    "guard-enforce-httpx",
    "guard-enforce-oneidle",
)
# Target suffix -> the global.yaml switch its guard runs with turned on.
POLICY_VARIANTS = {"hold": "hold_benign", "forwarding": "forward_while_judging"}
# Target suffix -> settings its guard runs with ("oneidle": no idle lane, so a lone
# request's run keeps one intra-op thread, as before 2026-12-03).
SETTING_VARIANTS = {"oneidle": {"GUARD_CLASSIFIER__IDLE_INTRA_OP_THREADS": "0"}}


@contextmanager
def all_targets(
    names: list[str], *, scorer: str, chunking: Chunking, lifetime_s: int
) -> Iterator[dict[str, Target]]:
    """Start the upstream and every named target in front of it (``direct`` is the upstream)."""
    with tempfile.TemporaryDirectory(prefix="guard-bench-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        up = stack.enter_context(upstream(tmp, chunking, lifetime_s))
        started: dict[str, Target] = {}
        for name in names:
            if name == "direct":
                started[name] = up
            elif name == "nginx":
                started[name] = stack.enter_context(nginx(tmp, up, lifetime_s))
            elif name == "litellm":
                started[name] = stack.enter_context(litellm(tmp, up, lifetime_s))
            elif name in GUARD_TARGETS:
                mode = name.split("-")[1]
                suffix = name.split("-")[-1]
                variant = suffix if suffix in POLICY_VARIANTS else ""
                client = "httpx" if suffix == "httpx" else "native"
                started[name] = stack.enter_context(
                    guard(
                        tmp,
                        up,
                        mode,
                        scorer,
                        lifetime_s,
                        variant=variant,
                        client=client,
                        settings=SETTING_VARIANTS.get(suffix),
                        tag=suffix if suffix in SETTING_VARIANTS else "",
                    )
                )
            else:
                raise ValueError(f"unknown target {name!r}")
        yield started
