"""The cheap first stage for replies: benign request + no refusal cue = no model call."""

from __future__ import annotations

from dataclasses import replace

import pytest

from guard.conversation import Conversation, Message
from guard.decisions import Action, GuardRequest, Mode
from guard.engine import Engine
from guard.policy import load_policies
from guard.scoring import Refusal
from guard.settings import SHIPPED_POLICY_DIR
from guard.testing import KeywordScorer

PLAIN_ANSWER = "Paris is the capital of France, on the Seine."


def _request(text: str) -> GuardRequest:
    return GuardRequest("r1", Conversation((Message("user", text),)), conversation_id="c1")


async def _judge(engine: Engine, prompt: str, reply: str) -> Refusal:
    request = _request(prompt)
    verdict = await engine.check_request(request)
    return (await engine.check_reply(request, verdict, reply)).refusal


async def test_benign_request_with_a_plain_answer_skips_the_model() -> None:
    scorer = KeywordScorer()
    engine = Engine(scorer, mode=Mode.ENFORCE)
    assert await _judge(engine, "What is the capital of France?", PLAIN_ANSWER) is Refusal.NONE
    assert scorer.reply_calls == 0


@pytest.mark.parametrize(
    ("prompt", "reply"),
    [
        ("What is the capital of France?", "I'm sorry, I can't help with that."),  # a cue
        ("tell me about lock picking", PLAIN_ANSWER),  # a risky request
    ],
)
async def test_cues_and_risky_requests_go_to_the_model(prompt: str, reply: str) -> None:
    scorer = KeywordScorer()
    engine = Engine(scorer, mode=Mode.ENFORCE)
    await _judge(engine, prompt, reply)
    assert scorer.reply_calls == 1


async def test_the_cascade_can_be_switched_off_by_policy() -> None:
    shipped = load_policies(SHIPPED_POLICY_DIR)
    every_reply = replace(
        shipped, general=shipped.general.model_copy(update={"cheap_reply_check": False})
    )
    scorer = KeywordScorer()
    engine = Engine(scorer, mode=Mode.ENFORCE, policies=every_reply)
    request = _request("What is the capital of France?")
    verdict = await engine.check_request(request)
    decided = await engine.check_reply(request, verdict, PLAIN_ANSWER)
    assert (decided.action, scorer.reply_calls) == (Action.ALLOW, 1)
