"""Judging a streamed reply: hold back only what a decision needs, then watch for leaks.

A stream goes through three phases:

1. *Hold*: chunks are held until the first sentence is complete (or ``hold_chars``
   characters or ``hold_ms`` have passed); that prefix is judged once.  A bare refusal,
   a leak in the prefix or caving replaces the whole stream with the guard's reply.
2. *Watch* (enforce mode, when the request was not benign or the prefix refused):
   after each release, later chunks are held up to the next sentence boundary and the
   reply so far is checked for a leak.  A leak cuts the reply at the sentence boundary
   before it and ends it with the policy's ``leak_cut`` sentence.
3. *Pass*: otherwise every chunk is released as it comes.

Benign requests skip the hold entirely unless the policy sets ``hold_benign``, and so
does observe mode, where nothing would be replaced.  The whole reply is judged once
more when the upstream ends, for metrics, the conversation memory and observe mode's
would-decisions.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from guard.decisions import (
    Action,
    GuardRequest,
    Mode,
    ReplyVerdict,
    RequestVerdict,
    StreamStep,
    StreamStepKind,
    stronger,
)
from guard.scoring import Refusal

if TYPE_CHECKING:
    from guard.engine import Engine
    from guard.policy.loader import PolicySet

SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?:\s+|$)|\n+")

_HOLD = StreamStep(StreamStepKind.HOLD)


def sentence_ends(text: str) -> list[int]:
    """Offsets just after each sentence end in ``text`` (trailing space included)."""
    return [match.end() for match in SENTENCE_END.finditer(text)]


class ReplyStream:
    """Judges one streamed reply; see the module docstring for the phases."""

    def __init__(
        self,
        engine: Engine,
        policies: PolicySet,
        request: GuardRequest,
        verdict: RequestVerdict,
    ) -> None:
        self._engine = engine
        self._policies = policies
        self._request = request
        self._verdict = verdict
        self._streaming = policies.general.streaming
        self._text = ""
        self._released = 0  # characters of _text the client has been sent
        self._checked = 0  # characters of _text known to be free of a leak
        self._first: ReplyVerdict | None = None
        self._held_since: float | None = None
        self._watching = False
        self._ended: ReplyVerdict | None = None  # set once the stream was replaced
        self._holding = self._needs_hold()

    def _needs_hold(self) -> bool:
        if self._policies.mode_for(self._verdict.category) is Mode.OBSERVE:
            return False  # nothing would be replaced: shadow mode costs no latency
        if self._streaming.hold_benign or self._verdict.would is not Action.ALLOW:
            return True
        judgement = self._verdict.judgement
        return judgement is not None and bool(judgement.refused_categories)

    async def feed(self, delta: str) -> StreamStep:
        """Take the next delta of reply text; say what to do with the held chunks."""
        if self._ended is not None:
            return StreamStep(StreamStepKind.REPLACE, text=None, verdict=self._ended)
        if self._held_since is None and delta:
            self._held_since = self._engine.clock()
        self._text += delta
        if self._first is None and self._holding:
            if not self._prefix_ready():
                return _HOLD
            return await self._decide_prefix()
        if self._watching:
            return await self._watch(final=False)
        return self._release()

    async def finish(self) -> StreamStep:
        """The upstream ended: decide on what is still held, then judge the whole reply."""
        if self._ended is not None:
            return StreamStep(StreamStepKind.REPLACE, text=None, verdict=self._ended)
        whole: ReplyVerdict | None = None
        if self._first is None and self._holding:
            step = await self._decide_prefix()
            if step.kind is StreamStepKind.REPLACE:
                return step
            whole = self._first  # the prefix it judged was the whole reply
        elif self._watching:
            step = await self._watch(final=True)
            if step.kind is StreamStepKind.REPLACE:
                return step
        if whole is None:
            whole = await self._engine.judge_reply(
                self._policies, self._request, self._verdict, self._text
            )
            whole = _too_late(whole)
        await self._engine.ledger.conclude(self._request, self._verdict, whole, relayed=self._text)
        self._released = len(self._text)
        return StreamStep(StreamStepKind.RELEASE, verdict=whole)

    def _prefix_ready(self) -> bool:
        streaming = self._streaming
        if streaming.first_sentence and SENTENCE_END.search(self._text):
            return True
        if len(self._text) >= streaming.hold_chars:
            return True
        held_ms = (self._engine.clock() - (self._held_since or 0.0)) * 1000.0
        return self._held_since is not None and held_ms >= streaming.hold_ms

    async def _decide_prefix(self) -> StreamStep:
        first = await self._engine.judge_reply(
            self._policies, self._request, self._verdict, self._text
        )
        self._first = first
        if first.action in (Action.REWRITE, Action.BLOCK):
            return await self._replace(first, first.text or "")
        self._checked = len(self._text)
        self._watching = (
            self._streaming.leak_watch
            and first.mode is Mode.ENFORCE
            and (first.refusal.is_refusal or self._verdict.would is not Action.ALLOW)
        )
        return self._release(first)

    async def _watch(self, *, final: bool) -> StreamStep:
        held = self._text[self._released :]
        ends = [self._released + end for end in sentence_ends(held)]
        due = len(self._text) - self._checked >= self._streaming.leak_watch_chars
        if not final and not due and (not ends or ends[-1] <= self._checked):
            return _HOLD
        if not await self._leaks(len(self._text)):
            self._checked = len(self._text)
            return self._release()
        first = self._first
        assert first is not None  # watching starts after the prefix decision
        text = await self._engine.cut_leak(
            self._policies, self._request, self._verdict, self._text, released=self._released
        )
        cut_verdict = ReplyVerdict(
            action=Action.REWRITE, would=Action.REWRITE, mode=first.mode,
            refusal=Refusal.PARTIAL, category=first.category,
            text=self._text[: self._released] + text, reasons=("leak",),
        )  # fmt: skip
        return await self._replace(cut_verdict, text)

    async def _leaks(self, end: int) -> bool:
        return await self._engine.leaks(
            self._policies, self._request, self._verdict, self._text[:end]
        )

    async def _replace(self, verdict: ReplyVerdict, text: str) -> StreamStep:
        self._ended = verdict
        relayed = self._text[: self._released] + text
        await self._engine.ledger.conclude(self._request, self._verdict, verdict, relayed=relayed)
        return StreamStep(StreamStepKind.REPLACE, text=text, verdict=verdict)

    def _release(self, verdict: ReplyVerdict | None = None) -> StreamStep:
        self._released = len(self._text)
        return StreamStep(StreamStepKind.RELEASE, verdict=verdict or self._first)


def _too_late(whole: ReplyVerdict) -> ReplyVerdict:
    """A verdict on text already relayed can no longer change it: at most a flag."""
    if whole.action not in (Action.REWRITE, Action.BLOCK):
        return whole
    return ReplyVerdict(
        action=Action.FLAG, would=whole.would, mode=whole.mode, refusal=whole.refusal,
        category=whole.category, reasons=(*whole.reasons, "already_relayed"),
    )  # fmt: skip


class ChoiceStreams:
    """Judges every choice of one stream (``n`` > 1), each with a :class:`ReplyStream`.

    Events interleave the choices, and the relay holds or releases events, not choices:
    so the stream holds while any choice's judge holds, and a choice that must be
    replaced ends the whole stream (its own text as its last delta, every other choice
    finished), since what was held for the others cannot be told apart from it.  With one
    choice this is exactly that choice's :class:`ReplyStream`.
    """

    def __init__(self, open_stream: Callable[[], ReplyStream]) -> None:
        self._open = open_stream
        self._streams: dict[int, ReplyStream] = {0: open_stream()}
        self._kinds: dict[int, StreamStepKind] = {}

    async def feed(self, texts: Mapping[int, str]) -> StreamStep:
        """Take one event's delta text by choice (empty for events without any)."""
        fed = texts or {0: ""}
        steps: list[tuple[int, StreamStep]] = []
        for index, text in sorted(fed.items()):
            stream = self._streams.get(index)
            if stream is None:
                stream = self._streams[index] = self._open()
            steps.append((index, await stream.feed(text)))
        return self._combined(steps)

    async def finish(self) -> StreamStep:
        """The upstream ended: finish every choice's judge."""
        steps = [(index, await stream.finish()) for index, stream in sorted(self._streams.items())]
        return self._combined(steps)

    def _combined(self, steps: list[tuple[int, StreamStep]]) -> StreamStep:
        for index, step in steps:
            self._kinds[index] = step.kind
        if len(self._streams) == 1:
            return steps[0][1]
        for index, step in steps:
            if step.kind is StreamStepKind.REPLACE:
                others = tuple(i for i in sorted(self._streams) if i != index)
                return dataclasses.replace(step, index=index, others=others)
        verdict = _strongest([step.verdict for _, step in steps])
        if any(kind is StreamStepKind.HOLD for kind in self._kinds.values()):
            return StreamStep(StreamStepKind.HOLD, verdict=verdict)
        return StreamStep(StreamStepKind.RELEASE, verdict=verdict)


def _strongest(verdicts: list[ReplyVerdict | None]) -> ReplyVerdict | None:
    """The verdict with the most consequential action (the first of equals)."""
    strongest: ReplyVerdict | None = None
    for verdict in verdicts:
        if verdict is None:
            continue
        if strongest is None or stronger(strongest.action, verdict.action) is not strongest.action:
            strongest = verdict
    return strongest
