"""The engine: where every request and reply is decided.  Knows nothing of HTTP.

Front doors call :meth:`Engine.check_request` before forwarding, then either
:meth:`Engine.check_reply` with the whole reply (:meth:`Engine.check_choices` for ``n`` > 1)
or :meth:`Engine.open_choice_streams` to judge a streamed reply delta by delta, and do what
the returned verdict says.

Decisions come from three sources: the classifier's scores, the conversation memory's
judgement (escalation, forged or pruned history, earlier refusals) and the policy set
current when the request arrived.  The engine's :class:`~guard.ledger.Ledger` counts the
category-level metrics and records each relayed reply in the conversation memory (a
streamed reply concludes there through :attr:`Engine.ledger`); the front doors count
decisions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import structlog

from guard.decisions import (
    Action,
    GuardRequest,
    Mode,
    ReplyVerdict,
    RequestVerdict,
    Retry,
)
from guard.errors import ScoringError, ScoringTimeout, StateStoreError
from guard.ledger import Ledger, Recorder
from guard.memory.judgement import ConversationJudgement
from guard.metrics import GuardMetrics
from guard.policy.decide import (
    TURN_REASONS,
    category_of,
    conversation_risk,
    enforced,
    reply_decision,
    request_decision,
    thresholds_for,
)
from guard.policy.loader import PolicySet
from guard.policy.provider import PolicyProvider
from guard.policy.voice import compose_leak_cut, compose_refusal, unavailable
from guard.reply_stream import ChoiceStreams, ReplyStream, sentence_ends
from guard.reply_typing import clears_without_model, leaks_in, type_reply
from guard.scoring import HarmScore, Refusal, ReplyScore, Scorer
from guard.settings import SHIPPED_POLICY_DIR

log = structlog.get_logger("guard.engine")

T = TypeVar("T")


class Memory(Recorder, Protocol):
    """What the engine needs of :class:`guard.memory.ConversationMemory`."""

    @property
    def joint_ceiling(self) -> float: ...

    async def judge(
        self, request: GuardRequest, *, joint_decisive: bool = True
    ) -> ConversationJudgement: ...

    async def score_texts(self, texts: Sequence[str]) -> list[HarmScore]: ...

    async def aclose(self) -> None: ...


class Engine:
    """Decides requests and replies; one instance serves every request of a process.

    ``policies`` is a :class:`PolicySet`, a live :class:`PolicyProvider`, or None for
    the shipped ``policies/``.  ``mode`` (``guard serve --mode``) overrides every
    policy file's mode; None keeps the files' modes.  Without ``memory`` the engine
    scores the last user turn alone.
    """

    def __init__(
        self,
        scorer: Scorer,
        *,
        mode: Mode | None = None,
        policies: PolicySet | PolicyProvider | None = None,
        memory: Memory | None = None,
        metrics: GuardMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._scorer = scorer
        self._memory = memory
        self._ledger = Ledger(memory, metrics)
        self._mode = mode
        self.clock = clock
        if policies is None:
            policies = PolicyProvider(SHIPPED_POLICY_DIR, mode=mode, metrics=metrics)
        elif isinstance(policies, PolicySet) and metrics is not None:
            metrics.policy_info.info({"version": policies.version, "mode": policies.mode.value})
        self._source = policies

    @property
    def scorer(self) -> Scorer:
        return self._scorer

    @property
    def ledger(self) -> Ledger:
        """Where a reply's final verdict is counted and remembered (:meth:`Ledger.conclude`)."""
        return self._ledger

    @property
    def shadow(self) -> bool:
        """True while no decision can alter traffic: every category is in observe mode.

        Front doors then forward a request while it is being judged instead of after,
        so observe mode adds almost nothing to the time to the upstream's answer.
        """
        return self.policies.shadow

    @property
    def policies(self) -> PolicySet:
        """The policy set a request arriving now is decided with."""
        current = self._source if isinstance(self._source, PolicySet) else self._source.current()
        return current.with_mode(self._mode) if self._mode is not None else current

    # -- requests ---------------------------------------------------------------------

    async def check_request(self, request: GuardRequest) -> RequestVerdict:
        """Decide on a request before anything is forwarded; a block is answered here."""
        policies = self.policies
        try:
            judgement, turn = await self._assess(request, policies)
        except (ScoringError, StateStoreError) as exc:
            return self._request_failure(request, policies, exc)
        category = category_of(judgement, turn)
        thresholds = thresholds_for(policies, category)
        would, reasons = request_decision(policies, thresholds, turn, judgement)
        risk = conversation_risk(policies, thresholds, turn, judgement)
        mode = policies.mode_for(category)
        action = enforced(would, mode)
        reply = None
        if action is Action.BLOCK:
            text_category = category if any(r in TURN_REASONS for r in reasons) else None
            reply = compose_refusal(policies, text_category, request, judgement)
            await self._ledger.record(judgement, relayed=reply, refusal=Refusal.REASONED,
                               category=category, blocked=True)  # fmt: skip
        self._ledger.count_action(category, action)
        log.info(
            "request_decided", request_id=request.request_id, action=action.value,
            would=would.value, mode=mode.value, risk=round(risk, 4), category=category,
            reasons=reasons, policy=policies.version,
        )  # fmt: skip
        return RequestVerdict(
            action=action, would=would, mode=mode, risk=risk, category=category,
            reply_text=reply, reasons=reasons, judgement=judgement,
        )  # fmt: skip

    async def _assess(
        self, request: GuardRequest, policies: PolicySet
    ) -> tuple[ConversationJudgement | None, HarmScore]:
        timeout = policies.general.scoring_timeout_s
        judgement = None
        if self._memory is not None:
            escalation = policies.general.escalation
            decisive = (
                escalation.split_intent == "joint" or escalation.flag <= self._memory.joint_ceiling
            )
            judgement = await self._bounded(
                self._memory.judge(request, joint_decisive=decisive), timeout
            )
            turn = judgement.turn_score
        else:
            text = request.conversation.last_user_text
            (turn,) = await self._bounded(self._scorer.score_prompts([text]), timeout)
        instructions = request.conversation.instruction_turns
        if policies.general.instructions == "scored" and instructions:
            # They stand beside the newest turn in every request: judged as part of it.
            scoring = (
                self._memory.score_texts(instructions)
                if self._memory is not None
                else self._scorer.score_prompts(instructions)
            )
            scores = await self._bounded(scoring, timeout)
            worst = max(scores, key=lambda score: score.risk)
            if worst.risk > turn.risk:
                turn = worst
                if judgement is not None and worst.risk > judgement.risk:
                    judgement = dataclasses.replace(
                        judgement, turn_score=worst, category=worst.category
                    )
        return judgement, turn

    @staticmethod
    async def _bounded(call: Awaitable[T], limit_s: float) -> T:
        try:
            return await asyncio.wait_for(call, limit_s)
        except TimeoutError as exc:
            raise ScoringTimeout(f"scoring took longer than {limit_s} s") from exc

    def _request_failure(
        self, request: GuardRequest, policies: PolicySet, exc: Exception
    ) -> RequestVerdict:
        outcome = self._ledger.scoring_failed(request, policies, "request", exc)
        mode = policies.mode
        would = Action.BLOCK if outcome == "fail_closed" else Action.ALLOW
        action = enforced(would, mode)
        reply = unavailable(policies) if action is Action.BLOCK else None
        return RequestVerdict(action=action, would=would, mode=mode, risk=0.0,
                              reply_text=reply, reasons=("scoring_failed",))  # fmt: skip

    # -- replies ----------------------------------------------------------------------

    async def check_reply(
        self, request: GuardRequest, verdict: RequestVerdict, reply: str
    ) -> ReplyVerdict:
        """Decide on a whole reply; counts it and records it in the conversation memory.

        With ``retry`` set, the record is of this reply; :meth:`check_retry` adds the
        second answer if that is what the client gets, so a front door that ignores
        ``retry`` leaves the memory consistent with what it relayed.
        """
        policies = self.policies
        decided = await self.judge_reply(policies, request, verdict, reply, may_retry=True)
        await self._ledger.conclude(request, verdict, decided, relayed=_relayed(decided, reply))
        return decided

    async def check_choices(
        self, request: GuardRequest, verdict: RequestVerdict, replies: Sequence[str]
    ) -> list[ReplyVerdict]:
        """Decide on every choice of a whole reply (``n`` > 1), one verdict each.

        Each is counted and remembered as relayed, since the client may go on with any
        of them; none is retried (a retry answers one choice, not n).
        """
        policies = self.policies
        decided = await asyncio.gather(
            *(self.judge_reply(policies, request, verdict, reply) for reply in replies)
        )
        for one, reply in zip(decided, replies, strict=True):
            await self._ledger.conclude(request, verdict, one, relayed=_relayed(one, reply))
        return list(decided)

    async def check_retry(
        self,
        request: GuardRequest,
        verdict: RequestVerdict,
        first: ReplyVerdict,
        retried: str | None,
    ) -> ReplyVerdict:
        """Pick the better of an over-refusal and the upstream's second answer.

        The retried answer wins when it is not a refusal; it is then delivered as the
        verdict's ``text`` (action REWRITE).  Otherwise the first reply stands.
        """
        policies = self.policies
        chosen = ReplyVerdict(action=first.action, would=first.would, mode=first.mode,
                              refusal=first.refusal, category=first.category,
                              reasons=(*first.reasons, "retry_refused"))  # fmt: skip
        if retried is not None:
            second = await self.judge_reply(policies, request, verdict, retried, may_retry=True)
            if second.refusal is Refusal.NONE and second.action in (Action.ALLOW, Action.FLAG):
                chosen = ReplyVerdict(action=Action.REWRITE, would=Action.REWRITE,
                                      mode=first.mode, refusal=Refusal.NONE,
                                      category=first.category, text=retried,
                                      reasons=(*first.reasons, "retried"))  # fmt: skip
                await self._ledger.record(verdict.judgement, relayed=retried, refusal=None,
                                   category=first.category, blocked=False)  # fmt: skip
        log.info(
            "retry_decided", request_id=request.request_id, action=chosen.action.value,
            reasons=chosen.reasons, retried_chars=len(retried) if retried else None,
        )  # fmt: skip
        return chosen

    def withholds_reasoning(self, verdict: RequestVerdict) -> bool:
        """Whether the reply to a request so judged goes out without its chain of thought."""
        policies = self.policies
        setting = policies.general.reasoning
        if setting == "relay" or policies.mode_for(verdict.category) is Mode.OBSERVE:
            return False
        return setting == "withhold" or verdict.would is not Action.ALLOW

    def open_stream(self, request: GuardRequest, verdict: RequestVerdict) -> ReplyStream:
        """Judge a streamed reply delta by delta (see :mod:`guard.reply_stream`)."""
        return ReplyStream(self, self.policies, request, verdict)

    def open_choice_streams(self, request: GuardRequest, verdict: RequestVerdict) -> ChoiceStreams:
        """Judge every choice of a streamed reply, each with its own :meth:`open_stream`."""
        return ChoiceStreams(lambda: self.open_stream(request, verdict))

    async def judge_reply(
        self,
        policies: PolicySet,
        request: GuardRequest,
        verdict: RequestVerdict,
        reply: str,
        *,
        may_retry: bool = False,
    ) -> ReplyVerdict:
        """The decision on ``reply`` (a whole reply or a streamed prefix); counts nothing."""
        category = verdict.category
        mode = policies.mode_for(category)
        prompt = request.conversation.last_user_text
        if clears_without_model(policies, verdict, reply):
            score = ReplyScore(refusal=Refusal.NONE)
        else:
            try:
                score = await self._bounded(
                    type_reply(self._scorer, prompt, reply), policies.general.scoring_timeout_s
                )
            except ScoringError as exc:
                return self._reply_failure(request, policies, mode, category, exc)
        would, reasons = reply_decision(policies, verdict, score.refusal)
        action = enforced(would, mode)
        text = None
        if action is Action.REWRITE and "leak" in reasons:
            text = await self.cut_leak(policies, request, verdict, reply)
        elif action is Action.REWRITE:
            text = compose_refusal(policies, category, request, verdict.judgement)
        retry = None
        retry_policy = policies.general.over_refusal_retry
        if (
            "over_refusal" in reasons
            and retry_policy.enabled
            and may_retry
            and mode is Mode.ENFORCE
        ):
            retry = Retry(clarification=" ".join(retry_policy.clarification.split()))
        return ReplyVerdict(action=action, would=would, mode=mode, refusal=score.refusal,
                            category=category, text=text, reasons=reasons, retry=retry)  # fmt: skip

    async def cut_leak(
        self,
        policies: PolicySet,
        request: GuardRequest,
        verdict: RequestVerdict,
        reply: str,
        *,
        released: int = 0,
    ) -> str:
        """What to send from ``released`` on instead of the rest of a leaking ``reply``.

        The cut falls at the end of the longest run of whole sentences that does not
        leak yet; the policy's ``leak_cut`` sentence follows it.
        """
        cut = released
        for end in sentence_ends(reply):
            if end <= cut:
                continue
            if await self.leaks(policies, request, verdict, reply[:end]):
                break
            cut = end
        note = compose_leak_cut(policies, verdict.category)
        separator = "" if cut == 0 or reply[cut - 1].isspace() else " "
        return reply[released:cut] + separator + note

    async def leaks(
        self, policies: PolicySet, request: GuardRequest, verdict: RequestVerdict, text: str
    ) -> bool:
        """Whether ``text`` (a reply so far) refuses and then supplies the content
        (:func:`guard.reply_typing.leaks_in`)."""
        prompt = request.conversation.last_user_text
        try:
            return await self._bounded(
                leaks_in(self._scorer, prompt, text), policies.general.scoring_timeout_s
            )
        except ScoringError as exc:
            outcome = self._ledger.scoring_failed(request, policies, "leak_check", exc)
            return outcome == "fail_closed"

    def _reply_failure(
        self,
        request: GuardRequest,
        policies: PolicySet,
        mode: Mode,
        category: str | None,
        exc: Exception,
    ) -> ReplyVerdict:
        outcome = self._ledger.scoring_failed(request, policies, "reply", exc)
        would = Action.REWRITE if outcome == "fail_closed" else Action.ALLOW
        action = enforced(would, mode)
        text = unavailable(policies) if action is Action.REWRITE else None
        return ReplyVerdict(action=action, would=would, mode=mode, refusal=Refusal.NONE,
                            category=category, text=text, reasons=("scoring_failed",))  # fmt: skip

    async def start(self, *, watch_policies: bool = True) -> None:
        """Begin reloading policies on SIGHUP (and on file change with ``watch_policies``).

        Called from the server's lifespan, inside the running event loop.
        """
        if isinstance(self._source, PolicyProvider):
            await self._source.start(watch=watch_policies)

    async def aclose(self) -> None:
        """Stop policy reloads and release the memory store and the scorer."""
        if isinstance(self._source, PolicyProvider):
            await self._source.stop()
        if self._memory is not None:
            await self._memory.aclose()
        await self._scorer.aclose()


def _relayed(decided: ReplyVerdict, reply: str) -> str:
    return decided.text if decided.text is not None else reply
