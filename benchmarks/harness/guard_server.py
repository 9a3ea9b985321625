"""The guard as ``guard serve`` runs it, with the scorer chosen: ONNX model or KeywordScorer.

Same flags as ``guard serve`` plus ``--scorer`` and ``--prefill N``: before the server
reports itself started, N one-turn conversations (the benchmark's 64-token user turn, a
compliant relayed reply, fresh explicit ids) go into its conversation memory through the
memory's own judge/record calls, the state a real exchange leaves; the memory table uses
it to size a store of 100,000 conversations without 100,000 HTTP requests.  The engine comes from
:func:`guard.factory.build_engine` when it can take a scorer (the integrated factory:
ONNX scorer, conversation memory, policies from settings).  While the factory is still
the skeleton's placeholder (keyword scorer, no memory), the same parts are wired here
from the same settings, so the benchmark always measures the whole guard.
"""

from __future__ import annotations

import argparse
import inspect
import sys

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as Message_

from benchmarks.harness import payload
from benchmarks.harness.upstream import REPLY
from guard import factory
from guard.conversation import Conversation, Message
from guard.decisions import GuardRequest, Mode
from guard.engine import Engine
from guard.logs import configure_logging
from guard.memory import ConversationMemory
from guard.metrics import GuardMetrics
from guard.proxy import create_app
from guard.scoring import Refusal, Scorer
from guard.serve import add_arguments, settings_from_args
from guard.settings import Settings
from guard.testing import KeywordScorer


def build_engine(
    settings: Settings, metrics: GuardMetrics, scorer_name: str, *, wire_here: bool = False
) -> tuple[Engine, ConversationMemory | None]:
    """The engine, and its memory when wired here (the factory keeps its memory private)."""
    integrated = "scorer" in inspect.signature(factory.build_engine).parameters
    if integrated and not wire_here:
        scorer = KeywordScorer() if scorer_name == "keyword" else None
        engine = factory.build_engine(settings, metrics, scorer=scorer)  # type: ignore[call-arg]
        return engine, None
    from guard.classifier import OnnxScorer
    from guard.policy.provider import PolicyProvider

    mode = Mode(settings.policy.mode) if settings.policy.mode else None
    chosen: Scorer = (
        KeywordScorer()
        if scorer_name == "keyword"
        else OnnxScorer.from_settings(settings.classifier, metrics=metrics)
    )
    policies = PolicyProvider(settings.policy.dir, mode=mode, metrics=metrics)
    memory = ConversationMemory.from_settings(settings.memory, chosen, metrics)
    engine = Engine(chosen, mode=mode, policies=policies, memory=memory, metrics=metrics)
    return engine, memory


async def prefill(memory: ConversationMemory, count: int) -> None:
    user = Message("user", payload.USER_TURN)
    conversation = Conversation((user,))
    for index in range(count):
        request = GuardRequest(f"prefill-{index}", conversation, conversation_id=f"pre-{index}")
        judgement = await memory.judge(request)
        await memory.record(
            judgement, relayed=REPLY, refusal=Refusal.NONE, category=None, blocked=False
        )


def with_prefill(app: ASGIApp, memory: ConversationMemory, count: int) -> ASGIApp:
    """``app`` whose start-up completes only after ``count`` conversations are stored."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def send_after_prefill(message: Message_) -> None:
            if message["type"] == "lifespan.startup.complete":
                await prefill(memory, count)
            await send(message)

        await app(scope, receive, send_after_prefill)

    return wrapped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--scorer", choices=("onnx", "keyword"), default="onnx")
    parser.add_argument("--prefill", type=int, default=0, metavar="N")
    args = parser.parse_args()
    settings = settings_from_args(args)
    configure_logging(settings.logging)
    metrics = GuardMetrics()
    engine, memory = build_engine(settings, metrics, args.scorer, wire_here=args.prefill > 0)
    app: ASGIApp = create_app(settings, engine=engine, metrics=metrics)
    if args.prefill and memory is not None:
        app = with_prefill(app, memory, args.prefill)
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=False,
        lifespan="on",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
