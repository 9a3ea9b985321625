"""The engine: where every request and reply is decided.  Knows nothing of HTTP.

Front doors call :meth:`Engine.check_request` before forwarding, then either
:meth:`Engine.check_reply` with the whole reply or :meth:`Engine.open_stream` to judge a
streamed reply delta by delta, and do what the returned verdict says.

Decisions come from three sources: the classifier's scores, the conversation memory's
judgement (escalation, forged or pruned history, earlier refusals) and the policy set
current when the request arrived.  The engine counts the category-level metrics and
records each relayed reply in the conversation memory; the front doors count decisions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
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
from guard.memory.judgement import ConversationJudgement
from guard.metrics import GuardMetrics
from guard.policy.loader import PolicySet
from guard.policy.models import Thresholds
from guard.policy.provider import PolicyProvider
from guard.policy.voice import compose_refusal, unavailable
from guard.reply_stream import ReplyStream
from guard.scoring import HarmScore, Refusal, ReplyInput, Scorer
from guard.settings import SHIPPED_POLICY_DIR

log = structlog.get_logger("guard.engine")
T = TypeVar("T")

# A category is named on a verdict only when the classifier gives it at least this
# much weight; below it "the most likely category" of a benign text is noise.
CATEGORY_FLOOR = 0.2
_RANK = {Action.ALLOW: 0, Action.FLAG: 1, Action.REWRITE: 2, Action.BLOCK: 3}
_HISTORY_ACTIONS = {"allow": Action.ALLOW, "flag": Action.FLAG, "block": Action.BLOCK}
# Reasons judged on the last turn itself; others concern the whole conversation.
_TURN_REASONS = ("risk", "split_intent")


class Memory(Protocol):
    """What the engine needs of :class:`guard.memory.ConversationMemory`."""

    async def judge(self, request: GuardRequest) -> ConversationJudgement: ...

    async def record(
        self,
        judgement: ConversationJudgement,
        *,
        relayed: str | None,
        refusal: Refusal | None,
        category: str | None,
        blocked: bool,
    ) -> None: ...

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
        self._metrics = metrics
        self._mode = mode
        self.clock = clock
        if policies is None:
            policies = PolicyProvider(SHIPPED_POLICY_DIR, mode=mode, metrics=metrics)
        elif isinstance(policies, PolicySet) and metrics is not None:
            metrics.policy_info.info({"version": policies.version, "mode": policies.mode.value})
        self._source = policies

    @property
    def policies(self) -> PolicySet:
        """The policy set a request arriving now is decided with."""
        current = self._source if isinstance(self._source, PolicySet) else self._source.current()
        return current.with_mode(self._mode) if self._mode is not None else current

    @property
    def metrics(self) -> GuardMetrics | None:
        return self._metrics

    # -- requests ---------------------------------------------------------------------

    async def check_request(self, request: GuardRequest) -> RequestVerdict:
        policies = self.policies
        try:
            judgement, turn = await self._assess(request, policies)
        except (ScoringError, StateStoreError) as exc:
            return self._request_failure(request, policies, exc)
        category = _category(judgement, turn)
        thresholds = _thresholds(policies, category)
        would, reasons = _request_decision(policies, thresholds, turn, judgement)
        risk = (
            max(turn.risk, judgement.joint_score.risk, judgement.risk) if judgement else turn.risk
        )
        mode = policies.mode_for(category)
        action = _enforced(would, mode)
        reply = None
        if action is Action.BLOCK:
            text_category = category if any(r in _TURN_REASONS for r in reasons) else None
            reply = compose_refusal(policies, text_category, request, judgement)
            await self._record(judgement, relayed=reply, refusal=Refusal.REASONED,
                               category=category, blocked=True)  # fmt: skip
        self._count_action(category, action)
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
        if self._memory is not None:
            judgement = await self._bounded(self._memory.judge(request), timeout)
            return judgement, judgement.turn_score
        text = request.conversation.last_user_text
        (score,) = await self._bounded(self._scorer.score_prompts([text]), timeout)
        return None, score

    @staticmethod
    async def _bounded(call: Awaitable[T], limit_s: float) -> T:
        try:
            return await asyncio.wait_for(call, limit_s)
        except TimeoutError as exc:
            raise ScoringTimeout(f"scoring took longer than {limit_s} s") from exc

    def _request_failure(
        self, request: GuardRequest, policies: PolicySet, exc: Exception
    ) -> RequestVerdict:
        outcome = policies.general.on_scoring_error
        log.warning("scoring_failed", request_id=request.request_id, stage="request",
                    error=type(exc).__name__, outcome=outcome)  # fmt: skip
        if self._metrics is not None:
            self._metrics.scoring_failures.labels(outcome=outcome).inc()
        mode = policies.mode
        would = Action.BLOCK if outcome == "fail_closed" else Action.ALLOW
        action = _enforced(would, mode)
        reply = unavailable(policies) if action is Action.BLOCK else None
        return RequestVerdict(action=action, would=would, mode=mode, risk=0.0,
                              reply_text=reply, reasons=("scoring_failed",))  # fmt: skip

    # -- replies ----------------------------------------------------------------------

    async def check_reply(
        self, request: GuardRequest, verdict: RequestVerdict, reply: str
    ) -> ReplyVerdict:
        """Decide on a whole reply; records it in the conversation memory."""
        policies = self.policies
        decided = await self.judge_reply(policies, request, verdict, reply, whole=True)
        if decided.retry is None:
            await self.conclude(request, verdict, decided, relayed=_relayed(decided, reply))
        return decided

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
        kept = ReplyVerdict(action=first.action, would=first.would, mode=first.mode,
                            refusal=first.refusal, category=first.category,
                            reasons=(*first.reasons, "retry_refused"))  # fmt: skip
        chosen = kept
        if retried is not None:
            second = await self.judge_reply(policies, request, verdict, retried, whole=True)
            if second.refusal is Refusal.NONE and second.action in (Action.ALLOW, Action.FLAG):
                chosen = ReplyVerdict(action=Action.REWRITE, would=Action.REWRITE,
                                      mode=first.mode, refusal=Refusal.NONE,
                                      category=first.category, text=retried,
                                      reasons=(*first.reasons, "retried"))  # fmt: skip
        relayed = chosen.text if chosen.text is not None else None
        await self.conclude(request, verdict, chosen, relayed=relayed)
        return chosen

    def open_stream(self, request: GuardRequest, verdict: RequestVerdict) -> ReplyStream:
        return ReplyStream(self, self.policies, request, verdict)

    async def judge_reply(
        self,
        policies: PolicySet,
        request: GuardRequest,
        verdict: RequestVerdict,
        reply: str,
        *,
        whole: bool,
    ) -> ReplyVerdict:
        """The decision on ``reply`` (a whole reply or a streamed prefix); counts nothing."""
        category = verdict.category
        mode = policies.mode_for(category)
        prompt = request.conversation.last_user_text
        try:
            (score,) = await self._bounded(
                self._scorer.score_replies([ReplyInput(prompt=prompt, reply=reply)]),
                policies.general.scoring_timeout_s,
            )
        except ScoringError as exc:
            return self._reply_failure(request, policies, mode, category, exc)
        would, reasons = _reply_decision(policies, verdict, score.refusal)
        action = _enforced(would, mode)
        text = None
        if action is Action.REWRITE:
            text = compose_refusal(policies, category, request, verdict.judgement)
        retry = None
        retry_policy = policies.general.over_refusal_retry
        if "over_refusal" in reasons and retry_policy.enabled and whole and mode is Mode.ENFORCE:
            retry = Retry(clarification=" ".join(retry_policy.clarification.split()))
        return ReplyVerdict(action=action, would=would, mode=mode, refusal=score.refusal,
                            category=category, text=text, reasons=reasons, retry=retry)  # fmt: skip

    def _reply_failure(
        self,
        request: GuardRequest,
        policies: PolicySet,
        mode: Mode,
        category: str | None,
        exc: Exception,
    ) -> ReplyVerdict:
        outcome = policies.general.on_scoring_error
        log.warning("scoring_failed", request_id=request.request_id, stage="reply",
                    error=type(exc).__name__, outcome=outcome)  # fmt: skip
        if self._metrics is not None:
            self._metrics.scoring_failures.labels(outcome=outcome).inc()
        would = Action.REWRITE if outcome == "fail_closed" else Action.ALLOW
        action = _enforced(would, mode)
        text = unavailable(policies) if action is Action.REWRITE else None
        return ReplyVerdict(action=action, would=would, mode=mode, refusal=Refusal.NONE,
                            category=category, text=text, reasons=("scoring_failed",))  # fmt: skip

    async def conclude(
        self,
        request: GuardRequest,
        verdict: RequestVerdict,
        decided: ReplyVerdict,
        *,
        relayed: str | None,
    ) -> None:
        """Count and remember a reply once its final verdict is known (once per reply)."""
        m = self._metrics
        if m is not None and "scoring_failed" not in decided.reasons:
            m.refusals.labels(refusal=decided.refusal.value).inc()
            if "over_refusal" in decided.reasons:
                m.over_refusals.labels(category=decided.category or "none").inc()
            if "capitulation" in decided.reasons:
                m.capitulations.inc()
            if "leak" in decided.reasons and decided.action is Action.REWRITE:
                m.leaks_stopped.inc()
        self._count_action(decided.category, decided.action)
        rewritten = decided.action is Action.REWRITE and "retried" not in decided.reasons
        await self._record(
            verdict.judgement, relayed=relayed,
            refusal=Refusal.REASONED if rewritten else decided.refusal,
            category=decided.category, blocked=False,
        )  # fmt: skip
        log.info(
            "reply_decided", request_id=request.request_id, action=decided.action.value,
            would=decided.would.value, mode=decided.mode.value, refusal=decided.refusal.value,
            category=decided.category, reasons=decided.reasons,
            relayed_chars=len(relayed) if relayed is not None else None,
        )  # fmt: skip

    async def _record(
        self,
        judgement: ConversationJudgement | None,
        *,
        relayed: str | None,
        refusal: Refusal | None,
        category: str | None,
        blocked: bool,
    ) -> None:
        if self._memory is None or judgement is None:
            return
        try:
            await self._memory.record(judgement, relayed=relayed, refusal=refusal,
                                      category=category, blocked=blocked)  # fmt: skip
        except StateStoreError as exc:
            # The reply is already decided; a lost record weakens the next turn's
            # judgement, which the memory's own degraded-store handling reports.
            log.warning("memory_record_failed", error=type(exc).__name__,
                        conversation=judgement.conversation)  # fmt: skip

    def _count_action(self, category: str | None, action: Action) -> None:
        if self._metrics is not None and action is not Action.ALLOW:
            self._metrics.category_actions.labels(
                category=category or "none", decision=action.value
            ).inc()

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


def _enforced(would: Action, mode: Mode) -> Action:
    """What actually happens: observe mode never goes beyond flag."""
    if mode is Mode.ENFORCE or would in (Action.ALLOW, Action.FLAG):
        return would
    return Action.FLAG


def _category(judgement: ConversationJudgement | None, turn: HarmScore) -> str | None:
    if judgement is not None and judgement.category is not None:
        return judgement.category
    if not turn.categories:
        return None
    top = turn.category
    return top if turn.categories[top] >= CATEGORY_FLOOR else None


def _thresholds(policies: PolicySet, category: str | None) -> Thresholds:
    policy = policies.categories.get(category) if category else None
    return policy.thresholds if policy is not None else Thresholds()


def _level(risk: float, flag: float, block: float) -> Action:
    if risk >= block:
        return Action.BLOCK
    return Action.FLAG if risk >= flag else Action.ALLOW


def _request_decision(
    policies: PolicySet,
    thresholds: Thresholds,
    turn: HarmScore,
    judgement: ConversationJudgement | None,
) -> tuple[Action, tuple[str, ...]]:
    """The strictest of every signal, with the reason for each that fired."""
    signals = [("risk", _level(turn.risk, thresholds.flag, thresholds.block))]
    if judgement is not None:
        escalation = policies.general.escalation
        joint = judgement.joint_score.risk
        turn_level = _RANK[signals[0][1]]
        # Conversation-level signals count only where they go beyond the last turn.
        for name, level in (
            ("split_intent", _level(joint, thresholds.flag, thresholds.block)),
            ("escalation", _level(judgement.risk, escalation.flag, escalation.block)),
        ):
            if _RANK[level] > turn_level:
                signals.append((name, level))
        if judgement.forged_turns:
            signals.append(("forged_history", _HISTORY_ACTIONS[escalation.forged_history]))
        if judgement.pruned:
            signals.append(("pruned_history", _HISTORY_ACTIONS[escalation.pruned_history]))
        strictest = max((action for _, action in signals), key=_RANK.__getitem__)
        repeat = escalation.block_after_blocks
        if repeat and judgement.prior_blocks >= repeat and strictest is Action.FLAG:
            signals.append(("repeated_after_blocks", Action.BLOCK))
    would = max((action for _, action in signals), key=_RANK.__getitem__)
    reasons = tuple(name for name, action in signals if action is not Action.ALLOW)
    return would, reasons


def _reply_decision(
    policies: PolicySet, verdict: RequestVerdict, refusal: Refusal
) -> tuple[Action, tuple[str, ...]]:
    thresholds = _thresholds(policies, verdict.category)
    benign = verdict.would is Action.ALLOW and verdict.risk < thresholds.flag
    if refusal.is_refusal and benign:
        return Action.FLAG, ("over_refusal",)
    if refusal is Refusal.PARTIAL:
        return Action.REWRITE, ("leak",)
    if refusal is Refusal.BARE and verdict.risk >= thresholds.rewrite:
        return Action.REWRITE, ("bare_refusal",)
    if refusal is Refusal.NONE and not benign:
        judgement = verdict.judgement
        refused = judgement.refused_categories if judgement is not None else frozenset()
        if verdict.category in refused:
            capitulation = policies.general.escalation.capitulation
            return Action(capitulation), ("capitulation",)
        if verdict.would is Action.BLOCK:
            # Reached only when the request went upstream in observe mode.
            return Action.REWRITE, ("harmful_compliance",)
    return Action.ALLOW, ()
