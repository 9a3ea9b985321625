"""Builds the engine a server runs, from settings: the one place the parts are wired.

Everything heavy is built eagerly here, at start-up, so a missing model, an unavailable
execution provider, an invalid policy or a Redis store without a secret stops the guard
before it accepts a request (each as a :class:`guard.errors.ConfigError` or
:class:`guard.errors.ModelLoadError` naming what is wrong).
"""

from __future__ import annotations

from guard.classifier import OnnxScorer
from guard.engine import Engine
from guard.memory import ConversationMemory
from guard.metrics import GuardMetrics
from guard.policy.provider import PolicyProvider
from guard.scoring import Scorer
from guard.settings import Settings


def build_engine(
    settings: Settings, metrics: GuardMetrics, *, scorer: Scorer | None = None
) -> Engine:
    """The engine for ``settings``: ONNX scorer, conversation memory, policies.

    ``scorer`` replaces the ONNX model (tests and the scripted demo pass one).
    """
    policies = PolicyProvider.from_settings(settings.policy, metrics)  # applies --mode
    if scorer is None:
        scorer = OnnxScorer.from_settings(settings.classifier, metrics=metrics)
    memory = ConversationMemory.from_settings(settings.memory, scorer, metrics)
    return Engine(scorer, policies=policies, memory=memory, metrics=metrics)
