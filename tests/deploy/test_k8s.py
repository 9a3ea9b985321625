"""The Kubernetes manifest runs the guard as a sidecar in front of the LLM server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from guard.settings import load_settings

from .support import DEPLOY

MANIFEST = DEPLOY / "k8s" / "sidecar.yaml"


@pytest.fixture(scope="module")
def documents() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")) if d]
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
    return docs


def _one(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [d for d in documents if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return found


@pytest.fixture(scope="module")
def pod(documents: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = _one(documents, "Deployment")["spec"]["template"]
    return spec


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in pod["spec"]["containers"] if c["name"] == name]
    return found


def _port(container: dict[str, Any], name_or_number: str | int) -> int:
    for port in container.get("ports", []):
        if name_or_number in (port.get("name"), port["containerPort"]):
            number: int = port["containerPort"]
            return number
    raise AssertionError(f"{container['name']} has no port {name_or_number}")


def _guard_settings(documents: list[dict[str, Any]], guard: dict[str, Any], tmp_path: Path) -> Any:
    """Load the guard's settings exactly as the container would: file from the ConfigMap."""
    env = {e["name"]: e["value"] for e in guard.get("env", [])}
    mounts = {m["mountPath"]: m for m in guard["volumeMounts"]}
    mount = mounts[env["GUARD_CONFIG"]]
    config = _one(documents, "ConfigMap", "refusal-guard-config")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config["data"][mount["subPath"]], encoding="utf-8")
    env.pop("GUARD_CONFIG")
    return load_settings(config_file, environ=env)


def test_guard_is_a_sidecar_of_the_llm_server(
    documents: list[dict[str, Any]], pod: dict[str, Any], tmp_path: Path
) -> None:
    names = {c["name"] for c in pod["spec"]["containers"]}
    assert names == {"llm", "guard"}
    llm, guard = _container(pod, "llm"), _container(pod, "guard")
    settings = _guard_settings(documents, guard, tmp_path)
    # The guard forwards over the pod's loopback to the LLM server, which listens there only.
    assert settings.upstream.url == "http://127.0.0.1:8000"
    args = llm["args"]
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--port") + 1] == "8000"
    assert "ports" not in llm
    assert settings.server.host == "0.0.0.0"  # the Service must reach it
    assert settings.server.port == _port(guard, "http")


def test_service_points_at_the_guard(documents: list[dict[str, Any]], pod: dict[str, Any]) -> None:
    service = _one(documents, "Service")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    guard = _container(pod, "guard")
    for port in service["spec"]["ports"]:
        assert _port(guard, port["targetPort"]) == _port(guard, "http")


def test_guard_probes(pod: dict[str, Any]) -> None:
    guard = _container(pod, "guard")
    ready, live = guard["readinessProbe"]["httpGet"], guard["livenessProbe"]["httpGet"]
    assert ready["path"] == "/readyz"
    assert live["path"] == "/healthz"
    assert _port(guard, ready["port"]) == _port(guard, live["port"]) == _port(guard, "http")


def test_resources_are_requested_and_limited(pod: dict[str, Any]) -> None:
    for container in pod["spec"]["containers"]:
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= resources[kind].keys(), (container["name"], kind)


def test_runs_as_non_root(pod: dict[str, Any]) -> None:
    pod_security = pod["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0
    for container in pod["spec"]["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["capabilities"]["drop"] == ["ALL"], container["name"]
        assert security.get("runAsUser", pod_security["runAsUser"]) != 0
    assert _container(pod, "guard")["securityContext"]["readOnlyRootFilesystem"] is True


def test_policies_come_from_a_config_map(
    documents: list[dict[str, Any]], pod: dict[str, Any], tmp_path: Path
) -> None:
    guard = _container(pod, "guard")
    settings = _guard_settings(documents, guard, tmp_path)
    (mount,) = [m for m in guard["volumeMounts"] if Path(m["mountPath"]) == settings.policy.dir]
    assert "subPath" not in mount, "a subPath mount would not see ConfigMap updates"
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "refusal-guard-policies"


def test_prometheus_annotations_scrape_the_guard(pod: dict[str, Any]) -> None:
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == _port(_container(pod, "guard"), "http")
    assert annotations["prometheus.io/path"] == "/metrics"
