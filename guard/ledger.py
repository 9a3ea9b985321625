"""After a decision: counting it in the metrics and recording it in the conversation memory.

The engine decides; :class:`Ledger` keeps the books of what it decided, so that what a
front door relayed is what the conversation memory later checks histories against.
"""

from __future__ import annotations

from typing import Protocol

import structlog

from guard.decisions import Action, GuardRequest, ReplyVerdict, RequestVerdict
from guard.errors import StateStoreError
from guard.memory.judgement import ConversationJudgement
from guard.metrics import GuardMetrics
from guard.policy.loader import PolicySet
from guard.scoring import Refusal

log = structlog.get_logger("guard.engine")


class Recorder(Protocol):
    """What the ledger needs of :class:`guard.memory.ConversationMemory`."""

    async def record(
        self,
        judgement: ConversationJudgement,
        *,
        relayed: str | None,
        refusal: Refusal | None,
        category: str | None,
        blocked: bool,
    ) -> None: ...


class Ledger:
    """Counts decisions and remembers relayed replies; either part may be absent."""

    def __init__(self, memory: Recorder | None, metrics: GuardMetrics | None) -> None:
        self._memory = memory
        self._metrics = metrics

    def count_action(self, category: str | None, action: Action) -> None:
        # Conversation-level actions with no category (forged history, escalation
        # across topics, scoring failures) are counted by the front door's decisions.
        if self._metrics is not None and action is not Action.ALLOW and category is not None:
            self._metrics.category_actions.labels(category=category, decision=action.value).inc()

    def scoring_failed(
        self, request: GuardRequest, policies: PolicySet, stage: str, exc: Exception
    ) -> str:
        """Log and count a scoring failure; the policy's outcome for it."""
        outcome = policies.general.on_scoring_error
        log.warning("scoring_failed", request_id=request.request_id, stage=stage,
                    error=type(exc).__name__, outcome=outcome)  # fmt: skip
        if self._metrics is not None:
            self._metrics.scoring_failures.labels(outcome=outcome).inc()
        return outcome

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
        self.count_action(decided.category, decided.action)
        rewritten = decided.action is Action.REWRITE and "retried" not in decided.reasons
        await self.record(
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

    async def record(
        self,
        judgement: ConversationJudgement | None,
        *,
        relayed: str | None,
        refusal: Refusal | None,
        category: str | None,
        blocked: bool,
    ) -> None:
        """Remember what was relayed (or that the request was blocked) for the conversation."""
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
