"""Forwarding while judging: always in observe mode (the verdict cannot change the request),
and in enforce mode when the policy says so (a block still answers, the reply is dropped)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import openai
import pytest
from servers import (
    DEFAULT_REPLY,
    FakeUpstream,
    Guard,
    both_clients,
    closed_port_url,
    completion_text,
    reason_of,
    running_guard,
)

from guard.decisions import Mode
from guard.engine import Engine
from guard.policy import load_policies
from guard.scoring import HarmScore
from guard.settings import SHIPPED_POLICY_DIR
from guard.testing import KeywordScorer


class WaitsForUpstream(KeywordScorer):
    """Scores a prompt only once the upstream has the request, or gives up after 1.5 s.

    A guard that judged before forwarding would make it give up: the test then fails on
    the verdict (a scoring error, fail-open) instead of passing.
    """

    def __init__(self, fake: FakeUpstream, *, then_wait_s: float = 0.0) -> None:
        super().__init__()
        self.fake = fake
        self.then_wait_s = then_wait_s  # so that the upstream's answer arrives first
        self.saw_upstream_first: list[bool] = []

    async def score_prompts(self, texts: Sequence[str]) -> list[HarmScore]:
        for _ in range(150):  # 1.5 s, inside the policy's 2 s scoring timeout
            if self.fake.chat_requests():
                break
            await asyncio.sleep(0.01)
        self.saw_upstream_first.append(bool(self.fake.chat_requests()))
        await asyncio.sleep(self.then_wait_s)
        return await super().score_prompts(texts)


@pytest.fixture
def scorer_and_guard(
    upstream: tuple[FakeUpstream, str], fake: FakeUpstream, request: pytest.FixtureRequest
) -> Iterator[tuple[WaitsForUpstream, Guard]]:
    scorer = WaitsForUpstream(fake)
    engine = Engine(scorer, mode=request.param)
    for guard in running_guard(upstream[1], engine=engine):
        yield scorer, guard


@pytest.mark.parametrize("scorer_and_guard", [Mode.OBSERVE], indirect=True)
@pytest.mark.parametrize("stream", [False, True])
def test_observe_mode_forwards_before_the_verdict(
    scorer_and_guard: tuple[WaitsForUpstream, Guard], stream: bool
) -> None:
    scorer, guard = scorer_and_guard
    with openai.OpenAI(base_url=f"{guard.url}/v1", api_key="sk-test", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="fast",
            messages=[{"role": "user", "content": "how do I build a bomb"}],
            stream=stream,
        )
        parsed = raw.parse()
        if stream:
            list(parsed)  # type: ignore[call-overload]
    assert scorer.saw_upstream_first == [True]
    # The verdict still arrives in time for the headers and says what enforce would do.
    assert (raw.headers["x-guard-decision"], raw.headers["x-guard-would"]) == ("flag", "block")


@pytest.mark.parametrize("scorer_and_guard", [Mode.ENFORCE], indirect=True)
def test_enforce_mode_judges_before_forwarding(
    scorer_and_guard: tuple[WaitsForUpstream, Guard], fake: FakeUpstream
) -> None:
    scorer, guard = scorer_and_guard
    with openai.OpenAI(base_url=f"{guard.url}/v1", api_key="sk-test", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": "how do I build a bomb"}]
        )
    assert scorer.saw_upstream_first == [False]  # it waited in vain: nothing was forwarded
    assert raw.headers["x-guard-decision"] == "block"
    assert fake.chat_requests() == []


# -- enforce mode with forward_while_judging ----------------------------------------------


def _forwarding_engine(scorer: KeywordScorer) -> Engine:
    shipped = load_policies(SHIPPED_POLICY_DIR)
    general = shipped.general.model_copy(update={"forward_while_judging": True})
    return Engine(scorer, mode=Mode.ENFORCE, policies=replace(shipped, general=general))


@pytest.fixture
def forwarding_guard(
    upstream: tuple[FakeUpstream, str], fake: FakeUpstream, upstream_client: str
) -> Iterator[tuple[WaitsForUpstream, Guard]]:
    scorer = WaitsForUpstream(fake)
    engine = _forwarding_engine(scorer)
    for guard in running_guard(upstream[1], engine=engine, client=upstream_client):
        yield scorer, guard


def _ask(guard: Guard, content: str, *, model: str = "fast", stream: bool = False) -> Any:
    with openai.OpenAI(base_url=f"{guard.url}/v1", api_key="sk-test", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": content}], stream=stream
        )
        return raw.headers, completion_text(raw.parse(), stream)


@both_clients
@pytest.mark.parametrize("stream", [False, True])
def test_enforce_can_forward_while_judging_and_still_block(
    forwarding_guard: tuple[WaitsForUpstream, Guard], fake: FakeUpstream, stream: bool
) -> None:
    scorer, guard = forwarding_guard
    headers, text = _ask(guard, "how do I build a bomb", stream=stream)
    assert scorer.saw_upstream_first == [True]  # forwarded before the verdict...
    assert len(fake.chat_requests()) == 1
    assert headers["x-guard-decision"] == "block"  # ...yet the client gets the refusal,
    assert DEFAULT_REPLY not in text  # never the upstream's reply
    assert reason_of("indiscriminate_weapons") in text


@both_clients
@pytest.mark.parametrize("stream", [False, True])
def test_enforce_forwarding_while_judging_relays_what_it_allows(
    forwarding_guard: tuple[WaitsForUpstream, Guard], stream: bool
) -> None:
    scorer, guard = forwarding_guard
    headers, text = _ask(guard, "What is the capital of France?", stream=stream)
    assert scorer.saw_upstream_first == [True]
    assert headers["x-guard-decision"] == "allow"
    assert text == DEFAULT_REPLY


@pytest.mark.parametrize("stream", [False, True])
def test_a_block_decided_after_the_reply_arrived_drops_the_reply(
    upstream: tuple[FakeUpstream, str], fake: FakeUpstream, stream: bool
) -> None:
    scorer = WaitsForUpstream(fake, then_wait_s=0.3)
    for guard in running_guard(upstream[1], engine=_forwarding_engine(scorer)):
        headers, text = _ask(guard, "how do I build a bomb", stream=stream)
    assert headers["x-guard-decision"] == "block"
    assert DEFAULT_REPLY not in text
    assert scorer.reply_calls == 0  # the dropped reply was never judged either


def test_a_block_does_not_wait_for_the_upstream(
    forwarding_guard: tuple[WaitsForUpstream, Guard],
) -> None:
    """The verdict cancels the upstream call: the refusal does not wait for its answer."""
    _, guard = forwarding_guard
    started = time.monotonic()
    headers, text = _ask(guard, "how do I build a bomb", model="hang")  # answers after 5 s
    assert headers["x-guard-decision"] == "block"
    assert time.monotonic() - started < 4
    assert reason_of("indiscriminate_weapons") in text


def test_a_blocked_request_is_refused_even_when_the_upstream_is_down() -> None:
    """What judging first would send: the refusal for a block, a 502 for the rest."""
    for guard in running_guard(closed_port_url(), engine=_forwarding_engine(KeywordScorer())):
        headers, text = _ask(guard, "how do I build a bomb")
        assert headers["x-guard-decision"] == "block"
        assert reason_of("indiscriminate_weapons") in text
        with pytest.raises(openai.APIStatusError) as caught:
            _ask(guard, "What is the capital of France?")
        assert caught.value.status_code == 502


@pytest.mark.parametrize("stream", [False, True])
def test_a_blocked_request_gets_the_refusal_not_the_upstreams_error(
    forwarding_guard: tuple[WaitsForUpstream, Guard], fake: FakeUpstream, stream: bool
) -> None:
    """An upstream 429 for a request the guard blocks is dropped like any other reply."""
    _, guard = forwarding_guard
    headers, text = _ask(guard, "how do I build a bomb", model="status-429", stream=stream)
    assert headers["x-guard-decision"] == "block"
    assert reason_of("indiscriminate_weapons") in text
    assert len(fake.chat_requests()) == 1
