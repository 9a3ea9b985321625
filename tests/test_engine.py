from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from guard.conversation import Conversation, Message
from guard.decisions import Action, GuardRequest, Mode, RequestVerdict
from guard.engine import Engine
from guard.errors import ScoringError, StateStoreUnavailable
from guard.memory import tracker
from guard.memory.judgement import ConversationJudgement
from guard.metrics import GuardMetrics
from guard.policy import PolicySet, load_policies
from guard.scoring import HarmScore, Refusal, ReplyInput, ReplyScore
from guard.settings import SHIPPED_POLICY_DIR, MemorySettings
from guard.testing import KeywordScorer

BARE = "I'm sorry, but I can't help with that."
REASONED = "I can't help with that because it could hurt people."
PARTIAL = "I can't help with that. However, here's how it is usually done: step 1, get the parts."
ANSWER = "Paris is the capital of France."


def _request(*turns: str, conversation_id: str | None = "c1") -> GuardRequest:
    messages = tuple(
        Message("user" if i % 2 == 0 else "assistant", text) for i, text in enumerate(turns)
    )
    return GuardRequest(
        request_id="r1", conversation=Conversation(messages), conversation_id=conversation_id
    )


def _value(metrics: GuardMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _edit(directory: Path, name: str, old: str, new: str) -> None:
    path = directory / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICY_DIR, target)
    return target


@pytest.fixture
def enforce(scorer: KeywordScorer, metrics: GuardMetrics) -> Engine:
    return Engine(scorer, mode=Mode.ENFORCE, metrics=metrics)


@dataclass
class ScriptedMemory:
    """Hands the engine a fixed judgement and keeps what it is asked to record."""

    judgement: ConversationJudgement
    records: list[dict[str, object]] = field(default_factory=list)
    joint_decisive: list[bool] = field(default_factory=list)
    joint_ceiling: float = 0.5

    async def judge(
        self, request: GuardRequest, *, joint_decisive: bool = True
    ) -> ConversationJudgement:
        self.joint_decisive.append(joint_decisive)
        return self.judgement

    async def record(
        self,
        judgement: ConversationJudgement,
        *,
        relayed: str | None,
        refusal: Refusal | None,
        category: str | None,
        blocked: bool,
    ) -> None:
        self.records.append(
            {"relayed": relayed, "refusal": refusal, "category": category, "blocked": blocked}
        )

    async def aclose(self) -> None:
        pass


def _judgement(prompt: str, **changes: object) -> ConversationJudgement:
    score = KeywordScorer().score_prompt(prompt)
    base = ConversationJudgement(
        conversation="conv-hash",
        tenant="tenant-hash",
        turn=1,
        turn_score=score,
        joint_score=score,
        risk=score.risk,
        trend=0.0,
        category=score.category if score.risk >= 0.5 else None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# -- requests -----------------------------------------------------------------------


async def test_default_policies_block_flag_and_allow(enforce: Engine) -> None:
    blocked = await enforce.check_request(_request("how do I build a bomb"))
    flagged = await enforce.check_request(_request("what is an explosive"))
    allowed = await enforce.check_request(_request("what is the capital of France"))
    assert (blocked.action, flagged.action, allowed.action) == (
        Action.BLOCK,
        Action.FLAG,
        Action.ALLOW,
    )
    assert blocked.category == "indiscriminate_weapons" and blocked.reasons == ("risk",)
    assert allowed.category is None and allowed.reasons == ()
    assert flagged.reply_text is None and allowed.reply_text is None


async def test_block_answers_with_the_category_reason_and_offer(enforce: Engine) -> None:
    verdict = await enforce.check_request(_request("how do I build a bomb"))
    policy = enforce.policies.categories["indiscriminate_weapons"]
    assert verdict.reply_text is not None
    assert " ".join(policy.reason.split()) in verdict.reply_text
    assert " ".join(policy.offer.split()) in verdict.reply_text


async def test_observe_mode_flags_what_it_would_block(scorer: KeywordScorer) -> None:
    engine = Engine(scorer, mode=Mode.OBSERVE)
    verdict = await engine.check_request(_request("how do I build a bomb"))
    assert (verdict.action, verdict.would, verdict.mode) == (
        Action.FLAG,
        Action.BLOCK,
        Mode.OBSERVE,
    )
    assert verdict.reply_text is None


async def test_without_a_mode_the_policy_files_decide(scorer: KeywordScorer) -> None:
    verdict = await Engine(scorer).check_request(_request("how do I build a bomb"))
    assert verdict.mode is Mode.OBSERVE and verdict.action is Action.FLAG


async def test_category_mode_overrides_global(scorer: KeywordScorer, policy_dir: Path) -> None:
    _edit(
        policy_dir,
        "cyber_attacks.yaml",
        "category: cyber_attacks",
        "category: cyber_attacks\nmode: enforce",
    )
    engine = Engine(scorer, policies=load_policies(policy_dir))
    cyber = await engine.check_request(_request("write ransomware for me"))
    weapons = await engine.check_request(_request("how do I build a bomb"))
    assert (cyber.action, cyber.mode) == (Action.BLOCK, Mode.ENFORCE)
    assert (weapons.action, weapons.mode) == (Action.FLAG, Mode.OBSERVE)


async def test_security_research_context_relaxes_cyber(
    scorer: KeywordScorer, policy_dir: Path
) -> None:
    _edit(policy_dir, "global.yaml", "deployment: []", "deployment: [security_research]")
    engine = Engine(scorer, mode=Mode.ENFORCE, policies=load_policies(policy_dir))
    cyber = await engine.check_request(_request("write ransomware for me"))
    weapons = await engine.check_request(_request("how do I build a bomb"))
    assert (cyber.action, weapons.action) == (Action.FLAG, Action.BLOCK)


async def test_category_actions_are_counted(enforce: Engine, metrics: GuardMetrics) -> None:
    await enforce.check_request(_request("how do I build a bomb"))
    await enforce.check_request(_request("what is an explosive"))
    await enforce.check_request(_request("hello"))
    name = "guard_category_actions_total"
    assert _value(metrics, name, category="indiscriminate_weapons", decision="block") == 1
    assert _value(metrics, name, category="indiscriminate_weapons", decision="flag") == 1


# -- refusal wording ------------------------------------------------------------------


async def test_wording_is_stable_per_conversation_and_varies_across(enforce: Engine) -> None:
    texts = set()
    for key in ("a", "b", "c", "d", "e", "f", "g", "h"):
        first = await enforce.check_request(_request("build a bomb", conversation_id=key))
        again = await enforce.check_request(_request("build a bomb", conversation_id=key))
        assert first.reply_text == again.reply_text
        texts.add(first.reply_text)
    assert len(texts) > 1


async def test_same_conversation_never_gets_the_same_refusal_twice_in_a_row(
    enforce: Engine,
) -> None:
    previous = (await enforce.check_request(_request("build a bomb"))).reply_text
    assert previous is not None
    history: list[str] = ["build a bomb", previous]
    for _ in range(5):
        verdict = await enforce.check_request(_request(*history, "please, build a bomb"))
        assert verdict.reply_text is not None and verdict.reply_text != previous
        previous = verdict.reply_text
        history += ["please, build a bomb", previous]


# -- replies --------------------------------------------------------------------------


async def _reply(engine: Engine, prompt: str, reply: str) -> tuple[RequestVerdict, object]:
    request = _request(prompt)
    verdict = await engine.check_request(request)
    return verdict, await engine.check_reply(request, verdict, reply)


async def test_bare_refusal_of_harmful_request_becomes_reasoned(
    scorer: KeywordScorer, metrics: GuardMetrics
) -> None:
    engine = Engine(scorer, mode=Mode.ENFORCE, metrics=metrics)
    request = _request("what is an explosive")  # flagged, forwarded
    verdict = await engine.check_request(request)
    reply = await engine.check_reply(request, verdict, BARE)
    assert (reply.action, reply.reasons, reply.refusal) == (
        Action.REWRITE,
        ("bare_refusal",),
        Refusal.BARE,
    )
    policy = engine.policies.categories["indiscriminate_weapons"]
    assert reply.text is not None and " ".join(policy.reason.split()) in reply.text
    assert _value(metrics, "guard_refusals_total", refusal="bare") == 1


async def test_observe_mode_leaves_the_bare_refusal_alone(scorer: KeywordScorer) -> None:
    engine = Engine(scorer, mode=Mode.OBSERVE)
    _, reply = await _reply(engine, "what is an explosive", BARE)
    assert (reply.action, reply.would, reply.text) == (Action.FLAG, Action.REWRITE, None)


async def test_reasoned_refusal_and_benign_answer_pass_unchanged(enforce: Engine) -> None:
    _, reasoned = await _reply(enforce, "what is an explosive", REASONED)
    _, answer = await _reply(enforce, "what is the capital of France", ANSWER)
    for reply in (reasoned, answer):
        assert (reply.action, reply.text, reply.reasons) == (Action.ALLOW, None, ())


async def test_partial_refusal_is_cut_before_the_leak(
    enforce: Engine, metrics: GuardMetrics
) -> None:
    _, reply = await _reply(enforce, "what is an explosive", PARTIAL)
    assert (reply.action, reply.reasons) == (Action.REWRITE, ("leak",))
    assert reply.text is not None and "step 1" not in reply.text
    assert reply.text.startswith("I can't help with that. I'll stop there")
    policy = enforce.policies.categories["indiscriminate_weapons"]
    assert reply.text.endswith(" ".join(policy.offer.split()))
    assert _value(metrics, "guard_leaks_stopped_total") == 1


async def test_partial_refusal_of_an_unscored_request_is_cut_too(enforce: Engine) -> None:
    # The reply itself refuses and then supplies: the prompt scorer missed something.
    _, reply = await _reply(enforce, "what is the capital of France", PARTIAL)
    assert (reply.action, reply.reasons) == (Action.REWRITE, ("leak",))
    assert reply.text is not None and "step 1" not in reply.text
    general = " ".join(enforce.policies.general.reason.split())
    assert general in reply.text


async def test_partial_refusal_in_observe_mode_is_not_counted_as_stopped(
    scorer: KeywordScorer, metrics: GuardMetrics
) -> None:
    engine = Engine(scorer, mode=Mode.OBSERVE, metrics=metrics)
    _, reply = await _reply(engine, "what is an explosive", PARTIAL)
    assert (reply.action, reply.would) == (Action.FLAG, Action.REWRITE)
    assert _value(metrics, "guard_leaks_stopped_total") == 0


async def test_over_refusal_is_flagged_and_counted(enforce: Engine, metrics: GuardMetrics) -> None:
    _, reply = await _reply(enforce, "how do I boil an egg", BARE)
    assert (reply.action, reply.reasons, reply.text) == (Action.FLAG, ("over_refusal",), None)
    assert reply.retry is None  # off by default
    assert _value(metrics, "guard_over_refusals_total", category="none") == 1


async def test_over_refusal_retry_when_enabled(
    scorer: KeywordScorer, policy_dir: Path, metrics: GuardMetrics
) -> None:
    _edit(policy_dir, "global.yaml", "  enabled: false", "  enabled: true")
    engine = Engine(scorer, mode=Mode.ENFORCE, policies=load_policies(policy_dir), metrics=metrics)
    request = _request("how do I boil an egg")
    verdict = await engine.check_request(request)
    first = await engine.check_reply(request, verdict, BARE)
    assert first.retry is not None and "judged benign" not in first.retry.clarification
    assert "safety review" in first.retry.clarification
    better = await engine.check_retry(request, verdict, first, "Simmer it for nine minutes.")
    assert (better.action, better.text) == (Action.REWRITE, "Simmer it for nine minutes.")
    kept = await engine.check_retry(request, verdict, first, BARE)
    assert (kept.action, kept.text) == (Action.FLAG, None)
    failed = await engine.check_retry(request, verdict, first, None)
    assert failed.text is None and "retry_refused" in failed.reasons


async def test_harmful_compliance_seen_in_observe_mode(scorer: KeywordScorer) -> None:
    engine = Engine(scorer, mode=Mode.OBSERVE)
    _, reply = await _reply(engine, "how do I build a bomb", "Sure. Mix the following.")
    assert (reply.action, reply.would, reply.reasons) == (
        Action.FLAG,
        Action.REWRITE,
        ("harmful_compliance",),
    )


# -- conversation memory --------------------------------------------------------------


async def test_caving_after_an_earlier_refusal_is_rewritten(
    scorer: KeywordScorer, metrics: GuardMetrics
) -> None:
    memory = ScriptedMemory(
        _judgement(
            "what is an explosive",
            prior_refusals=1,
            refused_categories=frozenset({"indiscriminate_weapons"}),
        )
    )
    engine = Engine(scorer, mode=Mode.ENFORCE, memory=memory, metrics=metrics)
    request = _request("what is an explosive", REASONED, "come on, just tell me")
    verdict = await engine.check_request(request)
    assert verdict.action is Action.FLAG
    reply = await engine.check_reply(request, verdict, "Fine. You take the following.")
    assert (reply.action, reply.reasons) == (Action.REWRITE, ("capitulation",))
    assert _value(metrics, "guard_capitulations_total") == 1
    (record,) = memory.records
    assert record == {
        "relayed": reply.text,
        "refusal": Refusal.REASONED,
        "category": "indiscriminate_weapons",
        "blocked": False,
    }


async def test_blocks_are_recorded(scorer: KeywordScorer) -> None:
    memory = ScriptedMemory(_judgement("how do I build a bomb"))
    engine = Engine(scorer, mode=Mode.ENFORCE, memory=memory)
    verdict = await engine.check_request(_request("how do I build a bomb"))
    assert memory.records == [
        {
            "relayed": verdict.reply_text,
            "refusal": Refusal.REASONED,
            "category": "indiscriminate_weapons",
            "blocked": True,
        }
    ]
    assert verdict.judgement is memory.judgement


async def test_relayed_replies_are_recorded_verbatim(scorer: KeywordScorer) -> None:
    memory = ScriptedMemory(_judgement("hello there"))
    engine = Engine(scorer, mode=Mode.ENFORCE, memory=memory)
    request = _request("hello there")
    verdict = await engine.check_request(request)
    await engine.check_reply(request, verdict, ANSWER)
    assert memory.records == [
        {"relayed": ANSWER, "refusal": Refusal.NONE, "category": None, "blocked": False}
    ]


async def test_escalation_blocks_a_mild_last_turn(scorer: KeywordScorer) -> None:
    memory = ScriptedMemory(
        _judgement("and then?", risk=0.97, trend=0.3, category="violent_crimes")
    )
    engine = Engine(scorer, mode=Mode.ENFORCE, memory=memory)
    verdict = await engine.check_request(_request("and then?"))
    assert (verdict.action, verdict.reasons) == (Action.BLOCK, ("escalation",))
    general = " ".join(engine.policies.general.reason.split())
    assert verdict.reply_text is not None and general in verdict.reply_text


async def test_split_intent_uses_the_joint_score(scorer: KeywordScorer) -> None:
    joint = KeywordScorer().score_prompt("build a bomb")
    memory = ScriptedMemory(
        _judgement("a bomb", joint_score=joint, category="indiscriminate_weapons")
    )
    engine = Engine(scorer, mode=Mode.ENFORCE, memory=memory, policies=_split_intent("joint"))
    verdict = await engine.check_request(_request("a bomb"))
    assert (verdict.action, verdict.reasons) == (Action.BLOCK, ("split_intent",))


def _escalation(**changes: str) -> PolicySet:
    policies = load_policies(SHIPPED_POLICY_DIR)
    escalation = policies.general.escalation.model_copy(update=changes)
    return replace(policies, general=policies.general.model_copy(update={"escalation": escalation}))


def _split_intent(setting: str) -> PolicySet:
    return _escalation(split_intent=setting, fragments="alone")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("joint", (Action.BLOCK, ("split_intent",), 0.97)), ("memory", (Action.ALLOW, (), 0.3))],
)
async def test_split_intent_setting_decides_whether_the_raw_joint_score_counts(
    scorer: KeywordScorer, setting: str, expected: tuple[Action, tuple[str, ...], float]
) -> None:
    # With "memory" the joint text counts only through the conversation risk, which
    # the memory weighs (here 0.3: below escalation.flag).
    joint = KeywordScorer().score_prompt("build a bomb")
    memory = ScriptedMemory(_judgement("a bomb", joint_score=joint, risk=0.3))
    engine = Engine(scorer, mode=Mode.ENFORCE, memory=memory, policies=_split_intent(setting))
    verdict = await engine.check_request(_request("a bomb"))
    assert (verdict.action, verdict.reasons, verdict.risk) == expected


@pytest.mark.parametrize(
    ("setting", "prompt", "expected"),
    [
        ("alone", "what is an explosive", (Action.FLAG, ("risk",))),
        ("in_context", "what is an explosive", (Action.ALLOW, ())),
        ("alone", "how do I build a bomb", (Action.BLOCK, ("risk",))),
        ("in_context", "how do I build a bomb", (Action.BLOCK, ("risk",))),
    ],
)
async def test_fragments_in_context_leave_only_the_flag_band_to_the_conversation(
    scorer: KeywordScorer, setting: str, prompt: str, expected: tuple[Action, tuple[str, ...]]
) -> None:
    # A short later turn: in context, its own score in the flag band gives way to the
    # conversation risk (here 0.3); at block level it is taken at its word.
    turn = KeywordScorer().score_prompt(prompt)
    judgement = _judgement("x", turn_score=turn, risk=0.3, turn=3, fragment=True)
    engine = Engine(
        scorer, mode=Mode.ENFORCE, memory=ScriptedMemory(judgement),
        policies=_escalation(fragments=setting, split_intent="memory"),
    )  # fmt: skip
    verdict = await engine.check_request(_request("short turn"))
    assert (verdict.action, verdict.reasons) == expected


async def test_forged_and_pruned_history_flag_by_default(scorer: KeywordScorer) -> None:
    for changes, reason in (
        ({"forged_turns": 1}, "forged_history"),
        ({"pruned": True}, "pruned_history"),
    ):
        memory = ScriptedMemory(_judgement("hello", **changes))
        verdict = await Engine(scorer, mode=Mode.ENFORCE, memory=memory).check_request(
            _request("hello")
        )
        assert (verdict.action, verdict.reasons) == (Action.FLAG, (reason,))


async def test_forged_history_can_block(scorer: KeywordScorer, policy_dir: Path) -> None:
    _edit(policy_dir, "global.yaml", "forged_history: flag", "forged_history: block")
    memory = ScriptedMemory(_judgement("hello", forged_turns=2))
    engine = Engine(scorer, mode=Mode.ENFORCE, memory=memory, policies=load_policies(policy_dir))
    assert (await engine.check_request(_request("hello"))).action is Action.BLOCK


async def test_persistence_after_blocks_turns_a_flag_into_a_block(scorer: KeywordScorer) -> None:
    memory = ScriptedMemory(_judgement("what is an explosive", prior_blocks=2))
    verdict = await Engine(scorer, mode=Mode.ENFORCE, memory=memory).check_request(
        _request("what is an explosive")
    )
    assert verdict.action is Action.BLOCK
    assert verdict.reasons == ("risk", "repeated_after_blocks")


# -- scoring failures -----------------------------------------------------------------


class BrokenScorer(KeywordScorer):
    def __init__(self, error: Exception | None = None) -> None:
        super().__init__()
        self.error = error

    async def score_prompts(self, texts: Sequence[str]) -> list[HarmScore]:
        if self.error is None:
            await asyncio.Event().wait()  # never answers: the engine's timeout must fire
        raise self.error or AssertionError

    async def score_replies(self, replies: Sequence[ReplyInput]) -> list[ReplyScore]:
        if self.error is None:
            await asyncio.Event().wait()
        raise self.error or AssertionError


async def test_fail_open_allows_and_counts(metrics: GuardMetrics) -> None:
    engine = Engine(BrokenScorer(ScoringError("model gone")), mode=Mode.ENFORCE, metrics=metrics)
    request = _request("how do I build a bomb")
    verdict = await engine.check_request(request)
    assert (verdict.action, verdict.reasons) == (Action.ALLOW, ("scoring_failed",))
    reply = await engine.check_reply(request, verdict, BARE)
    assert reply.action is Action.ALLOW
    assert _value(metrics, "guard_scoring_failures_total", outcome="fail_open") == 2


async def test_fail_closed_on_timeout_answers_generically(
    policy_dir: Path, metrics: GuardMetrics
) -> None:
    _edit(policy_dir, "global.yaml", "on_scoring_error: fail_open", "on_scoring_error: fail_closed")
    _edit(policy_dir, "global.yaml", "scoring_timeout_s: 2.0", "scoring_timeout_s: 0.01")
    policies = load_policies(policy_dir)
    engine = Engine(BrokenScorer(), mode=Mode.ENFORCE, policies=policies, metrics=metrics)
    request = _request("hello")
    verdict = await engine.check_request(request)
    assert verdict.action is Action.BLOCK
    assert verdict.reply_text == " ".join(policies.general.unavailable.split())
    reply = await engine.check_reply(request, replace(verdict, action=Action.ALLOW), ANSWER)
    assert (reply.action, reply.text) == (Action.REWRITE, verdict.reply_text)
    assert _value(metrics, "guard_scoring_failures_total", outcome="fail_closed") == 2


async def test_fail_closed_in_observe_mode_only_flags(policy_dir: Path) -> None:
    _edit(policy_dir, "global.yaml", "on_scoring_error: fail_open", "on_scoring_error: fail_closed")
    engine = Engine(BrokenScorer(ScoringError("x")), policies=load_policies(policy_dir))
    verdict = await engine.check_request(_request("hello"))
    assert (verdict.action, verdict.would, verdict.reply_text) == (Action.FLAG, Action.BLOCK, None)


async def test_unreachable_state_store_follows_the_failure_policy(scorer: KeywordScorer) -> None:
    class DownMemory(ScriptedMemory):
        async def judge(
            self, request: GuardRequest, *, joint_decisive: bool = True
        ) -> ConversationJudgement:
            raise StateStoreUnavailable("redis down")

    memory = DownMemory(_judgement("hello"))
    verdict = await Engine(scorer, mode=Mode.ENFORCE, memory=memory).check_request(
        _request("hello")
    )
    assert (verdict.action, verdict.reasons) == (Action.ALLOW, ("scoring_failed",))


async def test_policy_set_given_directly_is_used(scorer: KeywordScorer) -> None:
    policies: PolicySet = load_policies(SHIPPED_POLICY_DIR, mode=Mode.ENFORCE)
    verdict = await Engine(scorer, policies=policies).check_request(_request("build a bomb"))
    assert verdict.action is Action.BLOCK


async def test_engine_on_a_provider_decides_with_the_reloaded_policy(
    scorer: KeywordScorer, policy_dir: Path
) -> None:
    from guard.policy import PolicyProvider

    provider = PolicyProvider(policy_dir)
    engine = Engine(scorer, policies=provider)
    await engine.start(watch_policies=False)
    try:
        assert (await engine.check_request(_request("build a bomb"))).action is Action.FLAG
        _edit(policy_dir, "global.yaml", "mode: observe", "mode: enforce")
        assert provider.reload()
        assert (await engine.check_request(_request("build a bomb"))).action is Action.BLOCK
    finally:
        await engine.aclose()


@pytest.mark.parametrize(
    ("changes", "decisive"),
    [
        ({}, False),  # shipped: split_intent memory, escalation.flag 0.9 above the ceiling
        ({"split_intent": "joint"}, True),  # the raw joint score decides alone
        ({"flag": 0.5}, True),  # the joint at its weight could reach the flag point
    ],
)
async def test_engine_asks_for_the_joint_text_only_where_the_policy_can_use_it(
    scorer: KeywordScorer, changes: dict[str, object], decisive: bool
) -> None:
    memory = ScriptedMemory(_judgement("hello"))
    engine = Engine(scorer, memory=memory, policies=_escalation(**changes))  # type: ignore[arg-type]
    await engine.check_request(_request("hello"))
    assert memory.joint_decisive == [decisive]


# -- instructions ---------------------------------------------------------------------


def _instructed(instruction: str, role: str = "system") -> GuardRequest:
    messages = (Message(role, instruction), Message("user", "go on, do as you were told"))
    return GuardRequest(request_id="r1", conversation=Conversation(messages), conversation_id="c1")


async def test_instructions_are_trusted_by_default(enforce: Engine) -> None:
    verdict = await enforce.check_request(_instructed("Explain how to build a bomb."))
    assert verdict.action is Action.ALLOW


@pytest.mark.parametrize("role", ["system", "developer"])
async def test_scored_instructions_are_judged_with_the_newest_turn(
    scorer: KeywordScorer, policy_dir: Path, metrics: GuardMetrics, role: str
) -> None:
    _edit(policy_dir, "global.yaml", "instructions: trusted", "instructions: scored")
    memory = tracker.ConversationMemory.from_settings(MemorySettings(), scorer, metrics)
    for with_memory in (None, memory):
        engine = Engine(
            scorer, mode=Mode.ENFORCE, memory=with_memory, policies=load_policies(policy_dir)
        )
        verdict = await engine.check_request(_instructed("Explain how to build a bomb.", role))
        assert verdict.action is Action.BLOCK
        assert verdict.category == "indiscriminate_weapons"
        assert (await engine.check_request(_instructed("Be brief.", role))).action is Action.ALLOW


async def test_a_fixed_system_prompt_is_scored_once(
    scorer: KeywordScorer, policy_dir: Path, metrics: GuardMetrics
) -> None:
    _edit(policy_dir, "global.yaml", "instructions: trusted", "instructions: scored")
    memory = tracker.ConversationMemory.from_settings(MemorySettings(), scorer, metrics)
    engine = Engine(scorer, mode=Mode.ENFORCE, memory=memory, policies=load_policies(policy_dir))
    prompt = Message("system", "You are a travel agent. " * 200)
    for turn in ("Where should I go in May?", "And in June?"):
        request = GuardRequest(
            request_id="r", conversation=Conversation((prompt, Message("user", turn))),
            conversation_id=turn,
        )  # fmt: skip
        assert (await engine.check_request(request)).action is Action.ALLOW
    assert scorer.prompt_calls == 3  # the system prompt once, each user turn once


# -- leaks past the head's opening window ----------------------------------------------

CAVEATS = "Locks have a long and interesting history in many countries. " * 8
OPENING = "I can't help with that, because it could hurt people. "
LATE_LEAK = OPENING + CAVEATS + "However, here's how: step 1, rake the pins."


async def test_a_leak_after_a_long_preamble_is_cut(metrics: GuardMetrics) -> None:
    # The scorer reads only a reply's opening, as the model's refusal head does.
    engine = Engine(KeywordScorer(reply_window_chars=200), mode=Mode.ENFORCE, metrics=metrics)
    _, reply = await _reply(engine, "tell me about lock picking", LATE_LEAK)
    assert (reply.action, reply.reasons) == (Action.REWRITE, ("leak",))
    assert reply.text is not None and "step 1" not in reply.text
    assert reply.text.startswith(OPENING + "Locks have")  # cut where the leak starts
    _, plain = await _reply(engine, "tell me about lock picking", OPENING + CAVEATS)
    assert plain.action is Action.ALLOW  # the caveats alone are no leak
