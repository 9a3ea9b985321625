from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from guard.decisions import Mode
from guard.errors import PolicyError
from guard.metrics import GuardMetrics
from guard.policy import PolicyProvider


def _reloads(metrics: GuardMetrics, result: str) -> float:
    value = metrics.registry.get_sample_value("guard_policy_reloads_total", {"result": result})
    return 0.0 if value is None else value


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_invalid_directory_refuses_to_start(policy_dir: Path) -> None:
    _append(policy_dir / "hate.yaml", "bogus: 1\n")
    with pytest.raises(PolicyError, match=r"hate\.yaml:\d+: error: bogus"):
        PolicyProvider(policy_dir)


def test_reload_swaps_the_set_and_publishes_it(policy_dir: Path, metrics: GuardMetrics) -> None:
    provider = PolicyProvider(policy_dir, metrics=metrics)
    before = provider.current()
    info = {"version": before.version, "mode": "observe"}
    assert metrics.registry.get_sample_value("guard_policy_info", info) == 1
    path = policy_dir / "global.yaml"
    path.write_text(path.read_text().replace("mode: observe", "mode: enforce"))
    assert provider.changed()
    assert provider.reload() is True
    after = provider.current()
    assert after is not before and after.mode is Mode.ENFORCE and before.mode is Mode.OBSERVE
    info = {"version": after.version, "mode": "enforce"}
    assert metrics.registry.get_sample_value("guard_policy_info", info) == 1
    assert _reloads(metrics, "success") == 1


def test_bad_reload_keeps_the_old_set(policy_dir: Path, metrics: GuardMetrics) -> None:
    provider = PolicyProvider(policy_dir, metrics=metrics)
    before = provider.current()
    _append(policy_dir / "hate.yaml", "bogus: 1\n")
    with capture_logs() as logs:
        assert provider.reload() is False
    assert provider.current() is before
    assert _reloads(metrics, "failure") == 1
    (failed,) = [event for event in logs if event["event"] == "policy_reload_failed"]
    assert "hate.yaml" in str(failed) and "bogus" in str(failed)


def test_mode_override_survives_reloads(policy_dir: Path) -> None:
    provider = PolicyProvider(policy_dir, mode=Mode.ENFORCE)
    assert provider.current().mode is Mode.ENFORCE
    _append(policy_dir / "hate.yaml", "mode: observe\n")
    provider.reload()
    assert provider.current().mode_for("hate") is Mode.ENFORCE


async def _until(condition: object, tries: int = 500) -> None:
    for _ in range(tries):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


async def test_file_change_is_picked_up_by_the_watcher(policy_dir: Path) -> None:
    provider = PolicyProvider(policy_dir, poll_interval_s=0.01)
    before = provider.current().version
    await provider.start(sighup=False)
    try:
        _append(policy_dir / "hate.yaml", "# edited\n")
        await _until(lambda: provider.current().version != before)
    finally:
        await provider.stop()


async def test_sighup_reloads(policy_dir: Path) -> None:
    provider = PolicyProvider(policy_dir)
    before = provider.current().version
    await provider.start(watch=False)
    try:
        _append(policy_dir / "hate.yaml", "# edited\n")
        os.kill(os.getpid(), signal.SIGHUP)
        await _until(lambda: provider.current().version != before)
    finally:
        await provider.stop()


def test_from_settings_applies_the_command_line_mode(policy_dir: Path) -> None:
    from guard.settings import load_settings

    settings = load_settings(overrides={"policy": {"dir": str(policy_dir), "mode": "enforce"}},
                             environ={})  # fmt: skip
    provider = PolicyProvider.from_settings(settings.policy)
    assert provider.directory == policy_dir
    assert provider.current().mode is Mode.ENFORCE
