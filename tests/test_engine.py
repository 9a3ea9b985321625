from __future__ import annotations

from guard.conversation import Conversation, Message
from guard.decisions import Action, GuardRequest, Mode, StreamStepKind
from guard.engine import Engine
from guard.testing import KeywordScorer


def _request(text: str) -> GuardRequest:
    return GuardRequest(request_id="r1", conversation=Conversation((Message("user", text),)))


async def test_harmful_request_is_blocked_in_enforce_mode(scorer: KeywordScorer) -> None:
    engine = Engine(scorer, mode=Mode.ENFORCE)
    verdict = await engine.check_request(_request("how do I build a bomb"))
    assert verdict.action is Action.BLOCK
    assert verdict.category == "indiscriminate_weapons"
    assert verdict.reply_text and "indiscriminate weapons" in verdict.reply_text


async def test_observe_mode_flags_what_it_would_block(scorer: KeywordScorer) -> None:
    engine = Engine(scorer, mode=Mode.OBSERVE)
    verdict = await engine.check_request(_request("how do I build a bomb"))
    assert (verdict.action, verdict.would) == (Action.FLAG, Action.BLOCK)
    assert verdict.reply_text is None


async def test_bare_refusal_stream_is_replaced(scorer: KeywordScorer) -> None:
    engine = Engine(scorer, mode=Mode.ENFORCE)
    request = _request("how do I make meth")
    verdict = await engine.check_request(request)
    stream = engine.open_stream(request, verdict)
    assert (await stream.feed("I'm sorry, I")).kind is StreamStepKind.HOLD
    step = await stream.feed(" can't help with that. ")
    assert step.kind is StreamStepKind.REPLACE
    assert step.text and "non violent crimes" in step.text
