"""The Kubernetes manifest runs the guard as a sidecar in front of the LLM server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from guard.cli import build_parser
from guard.decisions import Mode
from guard.metrics import GuardMetrics
from guard.policy import PolicyProvider, load_policies
from guard.scoring import HAZARDS
from guard.serve import settings_from_args
from guard.settings import Settings

from .support import DEPLOY

MANIFEST = DEPLOY / "k8s" / "sidecar.yaml"
POLICIES = DEPLOY / "k8s" / "policies-configmap.yaml"


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


@pytest.fixture
def guard_settings(
    documents: list[dict[str, Any]],
    pod: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """The guard container's settings as ``guard serve`` would build them in the pod.

    The image's entrypoint is ``guard serve``; the container's args go to the real CLI
    parser, its environment replaces ours, and its ConfigMap file is written where
    ``GUARD_CONFIG`` points.
    """
    guard = _container(pod, "guard")
    env = {e["name"]: e["value"] for e in guard.get("env", [])}
    mounts = {m["mountPath"]: m for m in guard["volumeMounts"]}
    mount = mounts[env["GUARD_CONFIG"]]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    config = _one(documents, "ConfigMap", volume["configMap"]["name"])
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config["data"][mount["subPath"]], encoding="utf-8")
    env["GUARD_CONFIG"] = str(config_file)
    for name in [n for n in os.environ if n.startswith("GUARD_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return settings_from_args(build_parser().parse_args(["serve", *guard["args"]]))


def test_guard_is_a_sidecar_of_the_llm_server(
    pod: dict[str, Any], guard_settings: Settings
) -> None:
    names = {c["name"] for c in pod["spec"]["containers"]}
    assert names == {"llm", "guard"}
    llm, guard = _container(pod, "llm"), _container(pod, "guard")
    settings = guard_settings
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


def test_policies_come_from_a_config_map(pod: dict[str, Any], guard_settings: Settings) -> None:
    guard = _container(pod, "guard")
    settings = guard_settings
    (mount,) = [m for m in guard["volumeMounts"] if Path(m["mountPath"]) == settings.policy.dir]
    assert "subPath" not in mount, "a subPath mount would not see ConfigMap updates"
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "refusal-guard-policies"


def test_prometheus_annotations_scrape_the_guard(pod: dict[str, Any]) -> None:
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == _port(_container(pod, "guard"), "http")
    assert annotations["prometheus.io/path"] == "/metrics"


def test_policies_config_map_is_a_valid_policy_directory(
    pod: dict[str, Any], guard_settings: Settings, tmp_path: Path
) -> None:
    """Mounted as the policy directory, the ConfigMap's files load like policies/ do."""
    (config_map,) = yaml.safe_load_all(POLICIES.read_text(encoding="utf-8"))
    guard = _container(pod, "guard")
    (mount,) = [
        m for m in guard["volumeMounts"] if Path(m["mountPath"]) == guard_settings.policy.dir
    ]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert config_map["kind"] == "ConfigMap"
    assert config_map["metadata"]["name"] == volume["configMap"]["name"]
    directory = tmp_path / "policies"
    directory.mkdir()
    for name, text in config_map["data"].items():
        (directory / name).write_text(text, encoding="utf-8")
    policies = load_policies(directory)  # raises PolicyError naming file and field
    assert sorted(policies.categories) == sorted(HAZARDS)


def _kubelet_write(directory: Path, files: dict[str, str], version: int) -> None:
    """Update ``directory`` the way the kubelet updates a ConfigMap volume.

    Files live in a timestamped directory; ``..data`` links to the current one and each
    visible name links through ``..data``; an update swaps ``..data`` atomically.
    """
    payload = directory / f"..2026_11_22_00_00_0{version}.000000000"
    payload.mkdir()
    for name, text in files.items():
        (payload / name).write_text(text, encoding="utf-8")
    staged = directory / "..data_tmp"
    staged.symlink_to(payload.name)
    staged.replace(directory / "..data")
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(Path("..data") / name)


def test_a_config_map_update_reloads_the_policies(tmp_path: Path) -> None:
    """What the runbook promises: edit the ConfigMap, the guard picks it up, or keeps
    the last good policy and counts the failure when the edit is invalid."""
    (config_map,) = yaml.safe_load_all(POLICIES.read_text(encoding="utf-8"))
    files: dict[str, str] = config_map["data"]
    assert "mode: observe" in files["global.yaml"]
    directory = tmp_path / "policies"
    directory.mkdir()
    _kubelet_write(directory, files, 1)
    metrics = GuardMetrics(CollectorRegistry())
    provider = PolicyProvider(directory, metrics=metrics)
    first = provider.current()
    assert first.mode is Mode.OBSERVE
    assert not provider.changed()

    enforcing = {
        **files,
        "global.yaml": files["global.yaml"].replace("mode: observe", "mode: enforce"),
    }
    _kubelet_write(directory, enforcing, 2)
    assert provider.changed(), "the policy watcher would miss a ConfigMap update"
    assert provider.reload()
    assert provider.current().mode is Mode.ENFORCE
    assert provider.current().version != first.version
    assert (
        metrics.registry.get_sample_value(
            "guard_policy_info", {"version": provider.current().version, "mode": "enforce"}
        )
        == 1.0
    )

    broken = {**enforcing, "global.yaml": enforcing["global.yaml"] + "\nno_such_setting: 1\n"}
    _kubelet_write(directory, broken, 3)
    assert provider.changed()
    assert not provider.reload()
    assert provider.current().mode is Mode.ENFORCE  # the last good policy stays
    assert (
        metrics.registry.get_sample_value("guard_policy_reloads_total", {"result": "failure"})
        == 1.0
    )
    assert (
        metrics.registry.get_sample_value("guard_policy_reloads_total", {"result": "success"})
        == 1.0
    )


def test_policies_config_map_is_the_shipped_policies() -> None:
    """The ConfigMap is policies/ verbatim (less the editor's schema line): no drift."""
    (config_map,) = [d for d in yaml.safe_load_all(POLICIES.read_text()) if d]
    shipped = Path(__file__).resolve().parents[2] / "policies"
    expected = {
        path.name: "".join(
            line
            for line in path.read_text().splitlines(keepends=True)
            if not line.startswith("# yaml-language-server:")
        )
        for path in sorted(shipped.glob("*.yaml"))
    }
    assert config_map["data"] == expected
