"""The live policy: loaded once at start, swapped atomically on SIGHUP or file change.

Requests read :meth:`PolicyProvider.current` once and decide with that immutable
:class:`PolicySet`; a reload builds a whole new set and replaces the reference, so no
request is dropped or decided with half of each.  A reload that fails validation keeps
the old set, logs every problem (file, line, field) and counts a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import structlog

from guard.decisions import Mode
from guard.errors import PolicyError
from guard.metrics import GuardMetrics
from guard.policy.loader import PolicySet, load_policies
from guard.settings import PolicySettings

log = structlog.get_logger("guard.policy")

_Fingerprint = tuple[tuple[str, int, int], ...]


def _fingerprint(directory: Path) -> _Fingerprint:
    entries = []
    for path in sorted(directory.glob("*.yaml")):
        with contextlib.suppress(OSError):  # deleted between glob and stat
            stat = path.stat()
            entries.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(entries)


class PolicyProvider:
    """Holds the current :class:`PolicySet` of a directory and reloads it.

    Construction loads the directory and raises :class:`PolicyError` when it is
    invalid, so ``guard serve`` refuses to start.  ``mode`` (``guard serve --mode``)
    overrides the files' modes on every load.
    """

    def __init__(
        self,
        directory: Path,
        *,
        mode: Mode | None = None,
        metrics: GuardMetrics | None = None,
        poll_interval_s: float = 1.0,
    ) -> None:
        self.directory = directory
        self._mode = mode
        self._metrics = metrics
        self._poll_interval_s = poll_interval_s
        self._fingerprint = _fingerprint(directory) if directory.is_dir() else ()
        self._current = load_policies(directory, mode=mode)
        self._watcher: asyncio.Task[None] | None = None
        self._sighup_installed = False
        self._publish()

    @classmethod
    def from_settings(
        cls, settings: PolicySettings, metrics: GuardMetrics | None = None
    ) -> PolicyProvider:
        """The provider ``guard serve`` runs: ``settings.mode`` is ``--mode``."""
        mode = Mode(settings.mode) if settings.mode is not None else None
        return cls(settings.dir, mode=mode, metrics=metrics)

    def current(self) -> PolicySet:
        return self._current

    def reload(self) -> bool:
        """Load the directory again; keep the old set when the new one is invalid."""
        self._fingerprint = _fingerprint(self.directory) if self.directory.is_dir() else ()
        try:
            policies = load_policies(self.directory, mode=self._mode)
        except PolicyError as exc:
            log.error(
                "policy_reload_failed",
                directory=str(self.directory),
                kept_version=self._current.version,
                problems=str(exc).splitlines()[1:],
            )
            if self._metrics is not None:
                self._metrics.policy_reloads.labels(result="failure").inc()
            return False
        previous = self._current.version
        self._current = policies
        log.info("policy_reloaded", version=policies.version, previous=previous,
                 mode=policies.mode.value)  # fmt: skip
        if self._metrics is not None:
            self._metrics.policy_reloads.labels(result="success").inc()
        self._publish()
        return True

    def changed(self) -> bool:
        """Whether the files differ (by name, size, mtime) from those last loaded."""
        return _fingerprint(self.directory) != self._fingerprint

    async def start(self, *, watch: bool = True, sighup: bool = True) -> None:
        """Reload on SIGHUP and (``watch``) whenever a policy file changes."""
        loop = asyncio.get_running_loop()
        if sighup and not self._sighup_installed:
            try:
                loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
                self._sighup_installed = True
            except (NotImplementedError, RuntimeError, ValueError):
                # Not the main thread or no SIGHUP on this platform: watch files only.
                log.warning("policy_sighup_unavailable")
        if watch and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="policy-watcher")

    async def stop(self) -> None:
        if self._sighup_installed:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup_installed = False
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    def _on_sighup(self) -> None:
        log.info("policy_reload_requested", trigger="sighup")
        self.reload()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            if self.changed():
                log.info("policy_reload_requested", trigger="file_change")
                self.reload()

    def _publish(self) -> None:
        if self._metrics is not None:
            self._metrics.policy_info.info(
                {"version": self._current.version, "mode": self._current.mode.value}
            )
