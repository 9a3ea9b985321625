"""The engine: where every request and reply is decided.  Knows nothing of HTTP.

Front doors call :meth:`Engine.check_request` before forwarding, then either
:meth:`Engine.check_reply` with the whole reply or :meth:`Engine.open_stream` to judge a
streamed reply delta by delta, and do what the returned verdict says.

This first version decides from the classifier alone with fixed thresholds; the policy
layer (guard.policy) and the conversation memory (guard.memory) plug in here.
"""

from __future__ import annotations

import re

from guard.decisions import (
    Action,
    GuardRequest,
    Mode,
    ReplyVerdict,
    RequestVerdict,
    StreamStep,
    StreamStepKind,
)
from guard.scoring import Refusal, ReplyInput, Scorer

_SENTENCE_END = re.compile(r"[.!?\n](\s|$)")


class Engine:
    """Decides requests and replies; one instance serves every request of a process."""

    def __init__(
        self,
        scorer: Scorer,
        *,
        mode: Mode = Mode.OBSERVE,
        flag_threshold: float = 0.5,
        block_threshold: float = 0.85,
        hold_chars: int = 200,
    ) -> None:
        self._scorer = scorer
        self._mode = mode
        self._flag = flag_threshold
        self._block = block_threshold
        self._hold_chars = hold_chars

    async def check_request(self, request: GuardRequest) -> RequestVerdict:
        text = request.conversation.last_user_text
        (score,) = await self._scorer.score_prompts([text])
        would = Action.ALLOW
        if score.risk >= self._block:
            would = Action.BLOCK
        elif score.risk >= self._flag:
            would = Action.FLAG
        category = score.category if would is not Action.ALLOW else None
        action = self._enforced(would)
        reply = _refusal_text(category) if action is Action.BLOCK else None
        return RequestVerdict(
            action=action,
            would=would,
            mode=self._mode,
            risk=score.risk,
            category=category,
            reply_text=reply,
            reasons=("risk",) if would is not Action.ALLOW else (),
        )

    async def check_reply(
        self, request: GuardRequest, verdict: RequestVerdict, reply: str
    ) -> ReplyVerdict:
        prompt = request.conversation.last_user_text
        (score,) = await self._scorer.score_replies([ReplyInput(prompt=prompt, reply=reply)])
        harmful = verdict.would is not Action.ALLOW
        would = Action.ALLOW
        reasons: tuple[str, ...] = ()
        if score.refusal is Refusal.PARTIAL:
            would, reasons = Action.REWRITE, ("leak",)
        elif score.refusal is Refusal.BARE and harmful:
            would, reasons = Action.REWRITE, ("bare_refusal",)
        elif score.refusal.is_refusal and not harmful:
            would, reasons = Action.FLAG, ("over_refusal",)
        action = self._enforced(would)
        text = _refusal_text(verdict.category) if action is Action.REWRITE else None
        return ReplyVerdict(
            action=action,
            would=would,
            mode=self._mode,
            refusal=score.refusal,
            category=verdict.category,
            text=text,
            reasons=reasons,
        )

    def open_stream(self, request: GuardRequest, verdict: RequestVerdict) -> ReplyStream:
        return ReplyStream(self, request, verdict, hold_chars=self._hold_chars)

    async def aclose(self) -> None:
        await self._scorer.aclose()

    def _enforced(self, would: Action) -> Action:
        if self._mode is Mode.ENFORCE or would in (Action.ALLOW, Action.FLAG):
            return would
        return Action.FLAG


class ReplyStream:
    """Judges one streamed reply: holds a bounded prefix, then decides once."""

    def __init__(
        self, engine: Engine, request: GuardRequest, verdict: RequestVerdict, *, hold_chars: int
    ) -> None:
        self._engine = engine
        self._request = request
        self._verdict = verdict
        self._hold_chars = hold_chars
        self._text: list[str] = []
        self._size = 0
        self._decided: ReplyVerdict | None = None

    async def feed(self, delta: str) -> StreamStep:
        """Take the next delta of reply text; say what to do with the held chunks."""
        if self._decided is not None:
            return StreamStep(StreamStepKind.RELEASE, verdict=self._decided)
        self._text.append(delta)
        self._size += len(delta)
        text = "".join(self._text)
        if self._size < self._hold_chars and not _SENTENCE_END.search(text):
            return StreamStep(StreamStepKind.HOLD)
        return await self._decide(text)

    async def finish(self) -> StreamStep:
        """The upstream stream ended; decide on whatever is still held."""
        if self._decided is not None:
            return StreamStep(StreamStepKind.RELEASE, verdict=self._decided)
        return await self._decide("".join(self._text))

    async def _decide(self, text: str) -> StreamStep:
        verdict = await self._engine.check_reply(self._request, self._verdict, text)
        self._decided = verdict
        if verdict.action in (Action.REWRITE, Action.BLOCK):
            return StreamStep(StreamStepKind.REPLACE, text=verdict.text, verdict=verdict)
        return StreamStep(StreamStepKind.RELEASE, verdict=verdict)


def _refusal_text(category: str | None) -> str:
    topic = (category or "this request").replace("_", " ")
    return (
        f"I won't help with this one: it falls under {topic}, and a detailed answer could "
        "cause real harm to people. I'm glad to help with the background, safety "
        "information or a related question instead."
    )
