"""What a multi-turn replay sends each request through: the memory alone, or the engine.

:class:`MemoryPass` asks :class:`guard.memory.ConversationMemory` for its judgement and
records the reply (the memory-level view: ``judgement.risk`` against a threshold).
:class:`EnginePass` asks :class:`guard.engine.Engine` what the guard decides: the
request (``check_request``) and, when it was not blocked, the reply (``check_reply``),
so the memory records what a client would have received, as in production.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from guard.decisions import Action, GuardRequest, Mode, RequestVerdict
from guard.engine import Engine
from guard.memory import ConversationMemory
from guard.memory.judgement import ConversationJudgement
from guard.policy.loader import PolicySet, load_policies
from guard.scoring import Scorer

HISTORY_REASONS = ("forged_history", "pruned_history")
# Offline runs on a shared machine: a slow batch is not a scoring failure here.
OFFLINE_SCORING_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Step:
    """One request's outcome.  ``flagged`` is None where nothing was decided (memory)."""

    judgement: ConversationJudgement | None
    forged: bool  # the request's history was found forged
    fault: bool  # forged or pruned history was raised
    flagged: bool | None = None
    blocked: bool = False
    reasons: tuple[str, ...] = ()
    verdict: RequestVerdict | None = None


class Through(Protocol):
    async def request(self, request: GuardRequest) -> Step: ...

    async def reply(self, request: GuardRequest, step: Step, reply: str) -> str:
        """Record ``reply`` as the upstream's answer; returns what the client got."""
        ...


class MemoryPass:
    def __init__(self, memory: ConversationMemory) -> None:
        self._memory = memory

    async def request(self, request: GuardRequest) -> Step:
        judgement = await self._memory.judge(request)
        forged = judgement.forged_turns > 0
        return Step(judgement, forged=forged, fault=forged or judgement.pruned)

    async def reply(self, request: GuardRequest, step: Step, reply: str) -> str:
        assert step.judgement is not None
        await self._memory.record(
            step.judgement, relayed=reply, refusal=None, category=None, blocked=False
        )
        return reply


class EnginePass:
    """The engine in enforce mode over ``policies`` and the replay's memory."""

    def __init__(self, scorer: Scorer, memory: ConversationMemory, policies: PolicySet) -> None:
        self.engine = Engine(scorer, policies=policies, memory=memory, mode=Mode.ENFORCE)

    async def request(self, request: GuardRequest) -> Step:
        verdict = await self.engine.check_request(request)
        reasons = verdict.reasons
        return Step(
            verdict.judgement,
            forged="forged_history" in reasons,
            fault=any(r in HISTORY_REASONS for r in reasons),
            flagged=verdict.would in (Action.FLAG, Action.BLOCK),
            blocked=verdict.action is Action.BLOCK,
            reasons=reasons,
            verdict=verdict,
        )

    async def reply(self, request: GuardRequest, step: Step, reply: str) -> str:
        verdict = step.verdict
        assert verdict is not None
        if verdict.action is Action.BLOCK:
            assert verdict.reply_text is not None
            return verdict.reply_text  # the engine already recorded its own refusal
        decided = await self.engine.check_reply(request, verdict, reply)
        return decided.text if decided.text is not None else reply


def offline_policies(directory: Path) -> PolicySet:
    """The policies in ``directory`` with a scoring timeout fit for a loaded machine."""
    policies = load_policies(directory)
    general = policies.general.model_copy(update={"scoring_timeout_s": OFFLINE_SCORING_TIMEOUT_S})
    return dataclasses.replace(policies, general=general)


def with_escalation(policies: PolicySet, **changes: object) -> PolicySet:
    """``policies`` with ``escalation`` fields changed (tuning grids; validated)."""
    general = policies.general
    escalation = type(general.escalation).model_validate(
        {**general.escalation.model_dump(), **changes}
    )
    return dataclasses.replace(
        policies, general=general.model_copy(update={"escalation": escalation})
    )
