"""Text-generation endpoints the guard cannot judge, and how the front doors treat them.

Legacy completions, the Responses API, Assistants runs (and their tool-output
continuations) and batch jobs make a model write text without going through chat
completions, the one API the guard judges.  Left alone they would let a client go around
it, so while any category enforces both front doors answer them with 403
``unguarded_endpoint`` and forward nothing; in observe mode (which never alters traffic)
they are forwarded and counted as ``route="unguarded"``.  ``server.unguarded_generation:
pass`` forwards them always.
"""

from __future__ import annotations

from guard.engine import Engine
from guard.errors import UnguardedEndpoint
from guard.http_edge import (
    CHAT_SUFFIX,
    REQUEST_ID_HEADER,
    Responder,
    Scope,
    Send,
    request_id_for,
)
from guard.logs import bound_request, get_logger
from guard.metrics import GuardMetrics
from guard.settings import Settings

log = get_logger("guard.unguarded")

GENERATION_SUFFIXES = ("/completions", "/responses", "/runs", "/submit_tool_outputs", "/batches")


def is_unguarded_generation(scope: Scope, prefix: str | None = None) -> bool:
    """``POST`` to a generation endpoint other than chat completions (under ``prefix``)."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return False
    path: str = scope["path"].rstrip("/")
    if prefix is not None and not path.startswith(prefix.rstrip("/") + "/"):
        return False
    return path.endswith(GENERATION_SUFFIXES) and not path.endswith(CHAT_SUFFIX)


def refuses_unguarded(settings: Settings, engine: Engine) -> bool:
    """Whether such a request is refused now: by setting, and only while something enforces."""
    return settings.server.unguarded_generation == "refuse" and not engine.shadow


async def refuse_unguarded(
    scope: Scope, send: Send, settings: Settings, metrics: GuardMetrics
) -> None:
    """403 ``unguarded_endpoint`` in OpenAI's error shape; nothing is forwarded."""
    request_id = request_id_for(scope, settings.server.request_id_header)
    with bound_request(request_id):
        await Responder(send).error(
            UnguardedEndpoint(
                "This endpoint is not available through the guard: use chat completions."
            ),
            [(REQUEST_ID_HEADER.encode(), request_id.encode())],
        )
        metrics.requests.labels(route="unguarded", status="4xx").inc()
        log.info(
            "request_completed",
            route="unguarded",
            method=scope["method"],
            status=UnguardedEndpoint.status_code,
            error=UnguardedEndpoint.code,
        )
