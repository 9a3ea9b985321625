"""Refusal Guard: a runtime guardrail that makes an LLM's refusals real."""

from guard.decisions import Action, GuardRequest, Mode, ReplyVerdict, RequestVerdict
from guard.engine import Engine
from guard.errors import GuardError
from guard.settings import Settings, load_settings

__all__ = [
    "Action",
    "Engine",
    "GuardError",
    "GuardRequest",
    "Mode",
    "ReplyVerdict",
    "RequestVerdict",
    "Settings",
    "load_settings",
]

__version__ = "0.1.0"
