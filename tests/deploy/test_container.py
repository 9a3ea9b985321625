"""The Dockerfile and compose file: linted by parsing, and the image's steps replayed.

There is no Docker engine in the test run, so the last test replays what the image does
(install, copy, start, health check) in a temporary directory instead.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from guard.cli import build_parser
from guard.serve import settings_from_args
from guard.settings import Settings, load_settings

from .support import DEPLOY, REPO, free_port

DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def words(self) -> list[str]:
        """Exec form (JSON array) or shell form, as a list of words."""
        if self.args.lstrip().startswith("["):
            words: list[str] = json.loads(self.args)
            return words
        return shlex.split(self.args)


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions grouped by build stage (one list per FROM)."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends in a line continuation"
    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"{instruction.keyword} before the first FROM"
        stages[-1].append(instruction)
    return stages


@pytest.fixture(scope="module")
def final_stage() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))[-1]


def _all(stage: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in stage if i.keyword == keyword]


def _env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in _all(stage, "ENV"):
        for word in instruction.words():
            name, _, value = word.partition("=")
            env[name] = value
    return env


def test_runs_as_a_non_root_user(final_stage: list[Instruction]) -> None:
    users = _all(final_stage, "USER")
    assert users, "the runtime stage sets no USER, so it runs as root"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}
    # Nothing after USER switches back to root.
    assert final_stage.index(users[-1]) > max(
        final_stage.index(i) for i in final_stage if i.keyword in {"RUN", "COPY"}
    )


def test_bakes_in_model_and_policies(final_stage: list[Instruction]) -> None:
    copies = {tuple(i.words()[-2:]) for i in _all(final_stage, "COPY") if "--from" not in i.args}
    sources = {source.rstrip("/"): target.rstrip("/") for source, target in copies}
    assert {"models", "policies"} <= sources.keys()
    settings = load_settings(environ={k: v for k, v in _env(final_stage).items()
                                      if k.startswith("GUARD_")})  # fmt: skip
    # The settings the image runs with point at what it copied in.
    assert settings.classifier.model_dir == Path(sources["models"])
    assert settings.policy.dir == Path(sources["policies"])
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"


def test_installs_the_package(final_stage: list[Instruction]) -> None:
    stages = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    runs = " ".join(i.args for stage in stages for i in _all(stage, "RUN"))
    assert re.search(r"\bpip install\b[^&;]*\s\.(\s|$)", runs), "no `pip install .`"
    for stage in stages[:-1]:
        for copy in _all(stage, "COPY"):
            for source in copy.words()[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"


def test_port_and_health_check_match_the_settings(final_stage: list[Instruction]) -> None:
    env = {k: v for k, v in _env(final_stage).items() if k.startswith("GUARD_")}
    port = load_settings(environ=env).server.port
    assert port == Settings().server.port, "the image should serve on the default port"
    (expose,) = _all(final_stage, "EXPOSE")
    assert expose.args.split("/")[0] == str(port)
    (health,) = _all(final_stage, "HEALTHCHECK")
    assert f"http://127.0.0.1:{port}/healthz" in health.args


def _serve_settings(
    argv: list[str], environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The settings ``guard <argv>`` would run with under ``environ`` (the real CLI parser)."""
    for name in [n for n in os.environ if n.startswith("GUARD_")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        if name.startswith("GUARD_"):  # not PATH and friends: they would change this process
            monkeypatch.setenv(name, value)
    args = build_parser().parse_args(argv)
    assert args.command == "serve"
    return settings_from_args(args)


def test_image_serves_the_baked_in_files_on_all_interfaces(
    final_stage: list[Instruction], monkeypatch: pytest.MonkeyPatch
) -> None:
    (entrypoint,) = _all(final_stage, "ENTRYPOINT")
    (cmd,) = _all(final_stage, "CMD")
    argv = entrypoint.words() + cmd.words()
    assert argv[0] == "guard"
    settings = _serve_settings(argv[1:], _env(final_stage), monkeypatch)
    assert settings.server.host == "0.0.0.0"  # a container must listen beyond loopback
    (expose,) = _all(final_stage, "EXPOSE")
    assert expose.args.split("/")[0] == str(settings.server.port)
    assert settings.classifier.model_dir == Path("/app/models")
    assert settings.policy.dir == Path("/app/policies")


def test_build_context_sends_only_what_the_image_copies() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore[ignore.index("*") + 1 :]  # everything excluded, then re-included
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    stages = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    for stage in stages:
        for copy in _all(stage, "COPY"):
            if "--from" in copy.args:
                continue
            for source in copy.words()[:-1]:
                assert source.rstrip("/") in included, f"COPY {source}: excluded from context"


# ------------------------------------------------------------------------------ compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def test_compose_has_guard_upstream_prometheus_and_grafana(compose: dict[str, Any]) -> None:
    assert {"guard", "ollama", "prometheus", "grafana"} <= compose["services"].keys()


def test_compose_builds_the_guard_from_this_dockerfile(compose: dict[str, Any]) -> None:
    build = compose["services"]["guard"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == REPO
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_guard_settings_are_valid_and_reach_the_upstream(
    compose: dict[str, Any], final_stage: list[Instruction], monkeypatch: pytest.MonkeyPatch
) -> None:
    guard = compose["services"]["guard"]
    (entrypoint,) = _all(final_stage, "ENTRYPOINT")
    environ = _env(final_stage) | guard["environment"]  # compose's values win
    settings = _serve_settings(entrypoint.words()[1:] + guard["command"], environ, monkeypatch)
    assert settings.server.host == "0.0.0.0"
    host, _, port = settings.upstream.url.removeprefix("http://").partition(":")
    assert host in compose["services"]
    assert port == "11434"  # Ollama's API port
    # The upstream publishes no port: clients cannot go around the guard.
    assert "ports" not in compose["services"][host]
    assert guard["ports"] == [f"{settings.server.port}:{settings.server.port}"]


def test_compose_prometheus_scrapes_the_guard_service(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (target,) = job["static_configs"][0]["targets"]
    assert target == f"guard:{Settings().server.port}"
    for volume in compose["services"]["grafana"]["volumes"] + prometheus["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (DEPLOY / source).exists(), f"{volume}: mount source missing"


# ------------------------------------------------------------- the image, minus Docker


def _context_files(source: str, excluded: list[str]) -> list[Path]:
    """Files under ``source`` that the build context sends (the dockerignore applied)."""
    root = REPO / source
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    return [
        path
        for path in files
        if not any(
            fnmatch.fnmatch(str(path.relative_to(REPO)), pattern.rstrip("/") + suffix)
            for pattern in excluded
            for suffix in ("", "/*")
        )
    ]


def _copy_like_docker(stage: list[Instruction], root: Path, excluded: list[str]) -> None:
    """Run the stage's COPY instructions from the repository into ``root``."""
    workdir = Path("/")
    for instruction in stage:
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.args
        if instruction.keyword != "COPY" or "--from" in instruction.args:
            continue
        *sources, target = instruction.words()
        destination_dir = root / (workdir / target).relative_to("/")
        for source in sources:
            for path in _context_files(source, excluded):
                if (REPO / source).is_file():
                    destination = destination_dir / path.name
                else:
                    destination = destination_dir / path.relative_to(REPO / source)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, destination)


def test_image_steps_install_a_guard_that_runs_and_passes_its_health_check(
    tmp_path: Path,
) -> None:
    """Replays the Dockerfile without Docker: copy what the build stage copies (with the
    dockerignore applied), ``pip install .`` into a directory, copy what the runtime stage
    copies into /app, start ``guard serve`` there with the image's environment and no
    repository on the path, and run the image's own HEALTHCHECK command against it."""
    stages = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    build, final = stages[0], stages[-1]
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    excluded = [line for line in ignore if line and not line.startswith(("#", "!", "*"))]
    excluded += ["**/__pycache__", "*.pyc"]
    build_root, root = tmp_path / "build", tmp_path / "root"
    (workdir,) = [i.args for i in build if i.keyword == "WORKDIR"]
    _copy_like_docker(build, build_root, excluded)
    source_dir = build_root / workdir.lstrip("/")
    # Installed into a directory of its own: the dependencies are the ones installed here
    # already; the guard package itself comes only from this install.
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--target", str(site), str(source_dir)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    _copy_like_docker(final, root, excluded)
    (app_dir,) = [i.args for i in final if i.keyword == "WORKDIR"]
    app = root / app_dir.lstrip("/")
    image_env = _env(final)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
    env |= {k: v for k, v in image_env.items() if k != "PATH"}
    env["PATH"] = f"{site / 'bin'}:{env['PATH']}"
    env["PYTHONPATH"] = str(site)
    # The image's paths (/app/...) live under the temporary root here.
    for name in ("GUARD_CLASSIFIER__MODEL_DIR", "GUARD_POLICY__DIR"):
        env[name] = str(root / image_env[name].lstrip("/"))
    env["GUARD_SERVER__PORT"] = str(port)
    where = subprocess.run(
        ["python", "-c", "import guard; print(guard.__file__)"],
        cwd=app, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(site)), "the installed guard must be the one running"

    (entrypoint,) = _all(final, "ENTRYPOINT")
    (cmd,) = _all(final, "CMD")
    argv = entrypoint.words() + cmd.words()
    argv[argv.index("--host") + 1] = "127.0.0.1"  # no need to listen beyond loopback here
    process = subprocess.Popen(
        argv, cwd=app, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    (health,) = _all(final, "HEALTHCHECK")
    _, cmd_keyword, exec_form = health.args.partition("CMD ")
    assert cmd_keyword, "HEALTHCHECK without CMD"
    image_port = image_env["GUARD_SERVER__PORT"]
    check_cmd = [part.replace(f":{image_port}/", f":{port}/") for part in json.loads(exec_form)]
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"the installed guard exited: {process.communicate()[0]}")
            result = subprocess.run(check_cmd, cwd=app, env=env, capture_output=True, check=False)
            if result.returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"HEALTHCHECK never passed: {result.stderr.decode()[-2000:]}")
            time.sleep(0.3)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        # The baked-in policies loaded (their version is on /metrics).
        assert re.search(r'^guard_policy_info\{[^}]*version="\w+"', metrics, re.MULTILINE)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert "Traceback" not in output, output
