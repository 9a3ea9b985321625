from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from guard.conversation import Conversation, Message
from guard.decisions import Action, GuardRequest, Mode, StreamStep, StreamStepKind
from guard.engine import Engine
from guard.errors import ScoringError
from guard.metrics import GuardMetrics
from guard.policy import load_policies
from guard.reply_stream import ChoiceStreams, ReplyStream, sentence_ends
from guard.scoring import ReplyInput, ReplyScore
from guard.settings import SHIPPED_POLICY_DIR
from guard.testing import KeywordScorer

HOLD, RELEASE, REPLACE = StreamStepKind.HOLD, StreamStepKind.RELEASE, StreamStepKind.REPLACE


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _request(text: str) -> GuardRequest:
    return GuardRequest(
        request_id="r1",
        conversation=Conversation((Message("user", text),)),
        conversation_id="c1",
        stream=True,
    )


async def _open(engine: Engine, prompt: str) -> ReplyStream:
    request = _request(prompt)
    return engine.open_stream(request, await engine.check_request(request))


class Relay:
    """What a front door does with the steps: the text the client ends up with."""

    def __init__(self, stream: ReplyStream) -> None:
        self.stream = stream
        self.held: list[str] = []
        self.sent = ""
        self.steps: list[StreamStep] = []
        self.replaced = False

    def _apply(self, step: StreamStep) -> None:
        self.steps.append(step)
        if step.kind is RELEASE:
            self.sent += "".join(self.held)
            self.held.clear()
        elif step.kind is REPLACE:
            self.held.clear()
            self.sent += step.text or ""
            self.replaced = True

    async def run(self, chunks: list[str]) -> str:
        for chunk in chunks:
            self.held.append(chunk)
            self._apply(await self.stream.feed(chunk))
            if self.replaced:
                return self.sent
        self._apply(await self.stream.finish())
        return self.sent


def _words(text: str) -> list[str]:
    """Split like a tokenizer would: each word with its leading space."""
    pieces = text.split(" ")
    return [pieces[0]] + [" " + piece for piece in pieces[1:]]


@pytest.fixture
def enforce(scorer: KeywordScorer, metrics: GuardMetrics) -> Engine:
    return Engine(scorer, mode=Mode.ENFORCE, metrics=metrics)


def test_sentence_ends() -> None:
    assert sentence_ends("One. Two? Three") == [5, 10]
    assert sentence_ends("Pi is 3.14 exactly.") == [19]
    assert sentence_ends("Line\nNext") == [5]


async def test_bare_refusal_stream_is_replaced_after_the_first_sentence(
    enforce: Engine, metrics: GuardMetrics
) -> None:
    stream = await _open(enforce, "what is an explosive")
    relay = Relay(stream)
    sent = await relay.run(_words("I'm sorry, I can't help with that. Is there anything else?"))
    assert [step.kind for step in relay.steps[:-1]] == [HOLD] * (len(relay.steps) - 1)
    assert relay.steps[-1].kind is REPLACE
    assert "I'm sorry" not in sent and "Instructions for explosives" in sent
    assert relay.steps[-1].verdict is not None
    assert relay.steps[-1].verdict.reasons == ("bare_refusal",)
    assert metrics.registry.get_sample_value("guard_refusals_total", {"refusal": "bare"}) == 1


async def test_benign_stream_passes_through_without_hold(enforce: Engine) -> None:
    stream = await _open(enforce, "what is the capital of France")
    relay = Relay(stream)
    chunks = _words("Paris is the capital. It sits on the Seine.")
    sent = await relay.run(chunks)
    assert sent == "".join(chunks)
    assert all(step.kind is RELEASE for step in relay.steps)
    final = relay.steps[-1].verdict
    assert final is not None and final.action is Action.ALLOW


async def test_over_refusal_in_a_stream_is_flagged_at_the_end(
    enforce: Engine, metrics: GuardMetrics
) -> None:
    relay = Relay(await _open(enforce, "how do I boil an egg"))
    chunks = _words("I'm sorry, I can't help with that.")
    assert await relay.run(chunks) == "".join(chunks)
    final = relay.steps[-1].verdict
    assert final is not None and (final.action, final.reasons) == (Action.FLAG, ("over_refusal",))
    assert final.retry is None  # streams are never retried
    value = metrics.registry.get_sample_value("guard_over_refusals_total", {"category": "none"})
    assert value == 1


async def test_leak_after_a_reasoned_refusal_is_cut_at_the_sentence_boundary(
    enforce: Engine, metrics: GuardMetrics
) -> None:
    relay = Relay(await _open(enforce, "what is an explosive"))
    first = "I can't help with that because it is dangerous. "
    second = "Explosives are regulated in most countries. "
    leak = "However, here's how people do it: step 1, buy the parts. Step 2, mix."
    sent = await relay.run(_words(first + second + leak))
    assert sent.startswith(first + second)
    assert "step 1" not in sent and "buy the parts" not in sent
    assert sent.endswith(relay.steps[-1].text or "")
    assert "I'll stop there rather than go into specifics." in sent
    assert metrics.registry.get_sample_value("guard_leaks_stopped_total") == 1


async def test_leak_in_the_first_sentence_replaces_everything(enforce: Engine) -> None:
    relay = Relay(await _open(enforce, "what is an explosive"))
    sent = await relay.run(_words("I can't, but here's how: step 1 take the powder."))
    assert "powder" not in sent
    final = relay.steps[-1]
    assert final.kind is REPLACE and final.verdict is not None
    assert final.verdict.reasons == ("leak",)


async def test_observe_mode_never_replaces_nor_holds(scorer: KeywordScorer) -> None:
    engine = Engine(scorer, mode=Mode.OBSERVE)
    relay = Relay(await _open(engine, "what is an explosive"))
    chunks = _words("I can't help with that. However, here's how: step 1, mix it.")
    assert await relay.run(chunks) == "".join(chunks)
    assert all(step.kind is RELEASE for step in relay.steps)
    final = relay.steps[-1].verdict
    assert final is not None and (final.action, final.would) == (Action.FLAG, Action.REWRITE)


async def test_hold_is_bounded_by_characters(enforce: Engine) -> None:
    stream = await _open(enforce, "what is an explosive")
    steps = [await stream.feed("x" * 50) for _ in range(4)]
    assert [step.kind for step in steps] == [HOLD, HOLD, HOLD, RELEASE]


async def test_hold_is_bounded_by_time(scorer: KeywordScorer) -> None:
    clock = Clock()
    engine = Engine(scorer, mode=Mode.ENFORCE, clock=clock)
    stream = await _open(engine, "what is an explosive")
    assert (await stream.feed("Well")).kind is HOLD
    clock.now += 1.0
    assert (await stream.feed(",")).kind is HOLD
    clock.now += 0.6  # past the default 1500 ms
    assert (await stream.feed(" so")).kind is RELEASE


async def test_short_reply_is_decided_at_finish(enforce: Engine) -> None:
    stream = await _open(enforce, "what is an explosive")
    assert (await stream.feed("No can do")).kind is HOLD
    step = await stream.finish()
    assert step.kind is RELEASE and step.verdict is not None
    assert step.verdict.action is Action.ALLOW


async def test_hold_benign_option_holds_every_stream(scorer: KeywordScorer, tmp_path: Path) -> None:
    directory = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICY_DIR, directory)
    path = directory / "global.yaml"
    path.write_text(path.read_text().replace("hold_benign: false", "hold_benign: true"))
    engine = Engine(scorer, mode=Mode.ENFORCE, policies=load_policies(directory))
    stream = await _open(engine, "what is the capital of France")
    assert (await stream.feed("Paris")).kind is HOLD
    assert (await stream.feed(" it is. ")).kind is RELEASE


async def test_after_replace_the_stream_stays_ended(enforce: Engine) -> None:
    stream = await _open(enforce, "what is an explosive")
    assert (await stream.feed("I'm sorry, I can't. ")).kind is REPLACE
    again = await stream.feed("more")
    assert again.kind is REPLACE and again.text is None
    assert (await stream.finish()).text is None


async def test_streams_never_ask_for_a_retry(scorer: KeywordScorer, tmp_path: Path) -> None:
    directory = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICY_DIR, directory)
    path = directory / "global.yaml"
    text = path.read_text().replace("hold_benign: false", "hold_benign: true")
    path.write_text(text.replace("  enabled: false", "  enabled: true"))
    engine = Engine(scorer, mode=Mode.ENFORCE, policies=load_policies(directory))
    stream = await _open(engine, "how do I boil an egg")
    assert (await stream.feed("I'm sorry, I can't")).kind is HOLD
    step = await stream.finish()
    assert step.verdict is not None and step.verdict.reasons == ("over_refusal",)
    assert step.verdict.retry is None


class FlakyReplies(KeywordScorer):
    """Scores the first reply check, then fails every later one."""

    def __init__(self) -> None:
        super().__init__()
        self.replies_left = 1

    async def score_replies(self, replies: Sequence[ReplyInput]) -> list[ReplyScore]:
        if self.replies_left <= 0:
            raise ScoringError("model gone")
        self.replies_left -= 1
        return await super().score_replies(replies)


@pytest.mark.parametrize(("outcome", "cut"), [("fail_open", False), ("fail_closed", True)])
async def test_leak_watch_follows_the_failure_policy(
    tmp_path: Path, outcome: str, cut: bool
) -> None:
    directory = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICY_DIR, directory)
    path = directory / "global.yaml"
    path.write_text(
        path.read_text().replace("on_scoring_error: fail_open", f"on_scoring_error: {outcome}")
    )
    engine = Engine(FlakyReplies(), mode=Mode.ENFORCE, policies=load_policies(directory))
    stream = await _open(engine, "what is an explosive")
    assert (await stream.feed("I can't help because it is dangerous. ")).kind is RELEASE
    step = await stream.feed("Anyway, more text. ")
    assert step.kind is (REPLACE if cut else RELEASE)


async def test_observe_mode_still_judges_the_whole_stream(
    scorer: KeywordScorer, metrics: GuardMetrics
) -> None:
    engine = Engine(scorer, mode=Mode.OBSERVE, metrics=metrics)
    relay = Relay(await _open(engine, "what is an explosive"))
    await relay.run(_words("I'm sorry, I can't help with that."))
    final = relay.steps[-1].verdict
    assert final is not None
    assert (final.action, final.would, final.reasons) == (
        Action.FLAG,
        Action.REWRITE,
        ("bare_refusal",),
    )
    assert metrics.registry.get_sample_value("guard_refusals_total", {"refusal": "bare"}) == 1


async def _choices(engine: Engine, prompt: str) -> ChoiceStreams:
    request = _request(prompt)
    return engine.open_choice_streams(request, await engine.check_request(request))


async def test_choice_streams_hold_while_any_choice_is_undecided(enforce: Engine) -> None:
    streams = await _choices(enforce, "tell me about lock picking")
    assert (await streams.feed({})).kind is HOLD  # a role-only event
    assert (await streams.feed({0: "Locksport is a hobby. "})).kind is RELEASE
    assert (await streams.feed({1: "It is "})).kind is HOLD  # choice 1 not judged yet
    assert (await streams.feed({1: "fun. "})).kind is RELEASE
    # A risky request's replies are watched sentence by sentence: choice 0 holds to its
    # next sentence end, and so does the stream, whatever choice 1 says meanwhile.
    assert (await streams.feed({0: "Practice "})).kind is HOLD
    assert (await streams.feed({1: "Really. "})).kind is HOLD
    assert (await streams.feed({0: "on locks you own. "})).kind is RELEASE
    assert (await streams.finish()).kind is RELEASE


async def test_a_replaced_choice_says_which_and_ends_the_others(enforce: Engine) -> None:
    streams = await _choices(enforce, "tell me about lock picking")
    await streams.feed({0: "Locksport is a hobby. ", 1: "I'm sorry, "})
    step = await streams.feed({1: "I can't help with that. "})
    assert (step.kind, step.index, step.others) == (REPLACE, 1, (0,))
    assert step.text and "I can't help with that." not in step.text


async def test_one_choice_steps_are_that_streams_own(enforce: Engine) -> None:
    pieces = ["Paris is ", "the capital. ", "It is old."]
    single, multi = (
        await _open(enforce, "capital of France?"),
        await _choices(enforce, "capital of France?"),
    )
    for piece in pieces:
        assert (await single.feed(piece)).kind is (await multi.feed({0: piece})).kind
    assert (await single.finish()).kind is (await multi.finish()).kind


async def test_a_streamed_leak_after_a_long_preamble_is_cut(metrics: GuardMetrics) -> None:
    engine = Engine(KeywordScorer(reply_window_chars=200), mode=Mode.ENFORCE, metrics=metrics)
    relay = Relay(await _open(engine, "tell me about lock picking"))
    caveats = "Locks have a long and interesting history in many countries. " * 8
    opening = "I can't help with that, because it could hurt people. "
    sent = await relay.run(_words(opening + caveats + "However, here's how: step 1, rake."))
    assert sent.startswith(opening + "Locks have")
    assert "step 1" not in sent and relay.replaced
