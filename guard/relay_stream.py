"""Relaying one judged SSE stream: hold, release or replace, event by event.

The upstream's events go out byte for byte unless the engine says otherwise.  Each event
is fed to the engine's :class:`guard.reply_stream.ChoiceStreams` (its delta text by
choice, or nothing for events without any) and held while the step says HOLD; RELEASE
sends everything held; REPLACE drops what is held, ends the stream with the guard's text
in the stream's own id/model, and the caller closes the upstream.  The response head is
sent with the first non-HOLD step, so ``x-guard-decision`` can say ``rewrite`` for a
stream replaced whole.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from guard.decisions import StreamStep
from guard.decisions import StreamStepKind as Kind
from guard.http_edge import Responder, without_hop_by_hop
from guard.openai_api import (
    REASONING_FIELDS,
    ChatRequest,
    StreamIdentity,
    chunk_events,
    without_reasoning,
)
from guard.reply_stream import ChoiceStreams
from guard.sse import ChunkFacts, SSEEvent, SSEParser, chunk_facts

if TYPE_CHECKING:
    from guard.relay import ChatRelay, Reply
    from guard.relay_record import ChatRecord

# Upstream headers that stop being true once the guard decodes or rewrites the body.
BODY_FRAMING = (b"content-length", b"content-encoding")


async def relay_stream(
    relay: ChatRelay,
    responder: Responder,
    chat: ChatRequest,
    stream: ChoiceStreams,
    reply: Reply,
    record: ChatRecord,
    *,
    withhold: bool = False,
) -> None:
    """Relay ``reply``'s SSE events to ``responder`` as the engine's ``stream`` decides;
    with ``withhold``, without the chain-of-thought fields of their deltas."""
    record.stream = True
    state = _StreamState(relay, responder, chat, reply, record)
    parser = SSEParser()
    done = False
    async for chunk in reply.aiter_bytes():
        for event in parser.feed(chunk):
            if done:
                continue  # nothing after [DONE] is part of the stream
            if event.is_done:
                done = True
                if await state.apply(await state.timed(stream.finish())):
                    return
                await responder.body(event.raw)
                continue
            facts = chunk_facts(event)  # parsed once: identity and text by choice
            state.note_identity(facts)
            state.held.append(state.without_reasoning(event) if withhold else event.raw)
            step = await state.timed(stream.feed(facts.texts))
            if await state.apply(step):
                return
    tail = parser.close()
    if tail is not None and not done:
        state.held.append(tail.raw)
    if not done and await state.apply(await state.timed(stream.finish())):
        return
    await state.apply(StreamStep(Kind.RELEASE))
    await responder.end()


class _StreamState:
    """One judged stream: held events, its identity, whether anything went out yet."""

    def __init__(
        self,
        relay: ChatRelay,
        responder: Responder,
        chat: ChatRequest,
        reply: Reply,
        record: ChatRecord,
    ) -> None:
        self.relay = relay
        self.responder = responder
        self.chat = chat
        self.record = record
        self.headers = without_hop_by_hop(reply.headers, *BODY_FRAMING)
        self.held: list[bytes] = []
        self.released_any = False
        self.identity: StreamIdentity | None = None
        self.hold_started: float | None = None
        self.reasoning_withheld = False

    def without_reasoning(self, event: SSEEvent) -> bytes:
        """The event with its deltas' reasoning fields taken out (as it was without any);
        the stream is counted once, at the first it loses."""
        # Most events carry no chain of thought: skip parsing those a second time.
        if event.data is None or not any(name in event.data for name in REASONING_FIELDS):
            return event.raw
        try:
            payload = json.loads(event.data)
        except (ValueError, RecursionError):
            return event.raw
        if not without_reasoning(payload, "delta"):
            return event.raw
        if not self.reasoning_withheld:
            self.reasoning_withheld = True
            self.relay.metrics.reasoning_withheld.inc()
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    def note_identity(self, facts: ChunkFacts) -> None:
        if self.identity is None and facts.completion_id:
            self.identity = StreamIdentity(
                facts.completion_id,
                facts.model or self.chat.model or "guard",
                facts.created or int(time.time()),
            )

    async def timed(self, pending: Awaitable[StreamStep]) -> StreamStep:
        begun = time.perf_counter()
        step = await pending
        self.record.reply_overhead_s += time.perf_counter() - begun
        return step

    async def apply(self, step: StreamStep) -> bool:
        """Do what ``step`` says; True once the stream has been replaced and ended."""
        if step.verdict is not None:
            self.relay.note_verdict(self.record, step.verdict)
        if step.kind is Kind.HOLD:
            if self.hold_started is None:
                self.hold_started = time.perf_counter()
            return False
        self._held_for()
        if step.kind is Kind.RELEASE:
            await self._start()
            if self.held:
                self.released_any = True
                await self.responder.body(b"".join(self.held))
                self.held.clear()
            return False
        self.held.clear()
        await self._start()
        identity = self.identity or StreamIdentity.fresh(self.chat.model)
        events = chunk_events(
            step.text or "",
            identity,
            with_role=not self.released_any,
            index=step.index,
            also_ends=step.others,
        )
        await self.responder.end(b"".join(events))
        return True

    def _held_for(self) -> None:
        if self.hold_started is not None:
            held = time.perf_counter() - self.hold_started
            self.relay.metrics.stream_holdback.observe(held)
            self.hold_started = None

    async def _start(self) -> None:
        if not self.responder.started:
            headers = self.headers + self.relay.decision_headers(self.record)
            await self.responder.start(200, headers)
