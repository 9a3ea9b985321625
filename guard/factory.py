"""Builds the engine a server runs from settings.

PLACEHOLDER until integration: the lead replaces :func:`build_engine` with the real
construction (ONNX scorer, conversation memory, policies).  For now it wires the
deterministic :class:`guard.testing.KeywordScorer` so ``guard serve`` runs end to end.
"""

from __future__ import annotations

from guard.decisions import Mode
from guard.engine import Engine
from guard.metrics import GuardMetrics
from guard.settings import Settings
from guard.testing import KeywordScorer


def build_engine(settings: Settings, metrics: GuardMetrics) -> Engine:
    """The engine for ``settings`` (placeholder: keyword scorer, mode from settings)."""
    mode = Mode(settings.policy.mode) if settings.policy.mode else Mode.OBSERVE
    return Engine(KeywordScorer(), mode=mode)
