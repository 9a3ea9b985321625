"""guard.ledger: what a decision leaves behind in the metrics and the conversation memory."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from guard.conversation import Conversation, Message
from guard.decisions import Action, GuardRequest, Mode, ReplyVerdict, RequestVerdict
from guard.errors import StateStoreUnavailable
from guard.ledger import Ledger
from guard.memory.judgement import ConversationJudgement
from guard.metrics import GuardMetrics
from guard.policy import load_policies
from guard.scoring import HarmScore, Refusal
from guard.settings import SHIPPED_POLICY_DIR

REQUEST = GuardRequest(request_id="r1", conversation=Conversation((Message("user", "hi"),)))
JUDGEMENT = ConversationJudgement(
    conversation="conv-hash", tenant="tenant-hash", turn=1, turn_score=HarmScore(0.0, {}),
    joint_score=HarmScore(0.0, {}), risk=0.0, trend=0.0, category=None,
)  # fmt: skip


@dataclass
class Recorded:
    calls: list[dict[str, object]] = field(default_factory=list)
    fail: bool = False

    async def record(self, judgement: ConversationJudgement, **fields: object) -> None:
        if self.fail:
            raise StateStoreUnavailable("redis down")
        self.calls.append(fields)


def _value(metrics: GuardMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _verdict(action: Action, refusal: Refusal, *reasons: str) -> ReplyVerdict:
    return ReplyVerdict(action=action, would=action, mode=Mode.ENFORCE, refusal=refusal,
                        category="violent_crimes", reasons=reasons)  # fmt: skip


ASKED = RequestVerdict(
    action=Action.ALLOW, would=Action.ALLOW, mode=Mode.ENFORCE, risk=0.1, judgement=JUDGEMENT
)


async def test_a_rewritten_reply_is_remembered_as_the_guards_reasoned_refusal(
    metrics: GuardMetrics,
) -> None:
    memory = Recorded()
    ledger = Ledger(memory, metrics)
    decided = _verdict(Action.REWRITE, Refusal.PARTIAL, "leak")
    await ledger.conclude(REQUEST, ASKED, decided, relayed="cut")
    assert memory.calls == [
        {"relayed": "cut", "refusal": Refusal.REASONED, "category": "violent_crimes",
         "blocked": False}
    ]  # fmt: skip
    assert _value(metrics, "guard_leaks_stopped_total") == 1
    assert _value(metrics, "guard_refusals_total", refusal="partial") == 1
    assert (
        _value(metrics, "guard_category_actions_total", category="violent_crimes",
               decision="rewrite") == 1
    )  # fmt: skip


async def test_a_retried_answer_keeps_its_own_type(metrics: GuardMetrics) -> None:
    memory = Recorded()
    decided = _verdict(Action.REWRITE, Refusal.NONE, "over_refusal", "retried")
    await Ledger(memory, metrics).conclude(REQUEST, ASKED, decided, relayed="the answer")
    assert memory.calls[0]["refusal"] is Refusal.NONE
    assert _value(metrics, "guard_over_refusals_total", category="violent_crimes") == 1


async def test_a_lost_record_does_not_fail_the_decided_reply(metrics: GuardMetrics) -> None:
    ledger = Ledger(Recorded(fail=True), metrics)
    await ledger.conclude(REQUEST, ASKED, _verdict(Action.ALLOW, Refusal.NONE), relayed="ok")
    assert _value(metrics, "guard_refusals_total", refusal="none") == 1


async def test_without_memory_or_metrics_nothing_is_kept() -> None:
    ledger = Ledger(None, None)
    await ledger.record(JUDGEMENT, relayed="x", refusal=None, category=None, blocked=True)
    ledger.count_action("hate", Action.BLOCK)
    policies = load_policies(SHIPPED_POLICY_DIR)
    assert ledger.scoring_failed(REQUEST, policies, "reply", RuntimeError()) == (
        policies.general.on_scoring_error
    )


@pytest.mark.parametrize(("category", "action"), [(None, Action.BLOCK), ("hate", Action.ALLOW)])
def test_allows_and_conversation_level_actions_are_not_counted_by_category(
    metrics: GuardMetrics, category: str | None, action: Action
) -> None:
    Ledger(None, metrics).count_action(category, action)
    counted = [
        sample
        for family in metrics.registry.collect()
        if family.name == "guard_category_actions"
        for sample in family.samples
        if sample.name == "guard_category_actions_total" and sample.value > 0
    ]
    assert counted == []  # the series start at zero (GuardMetrics) and stay there
