"""Observe mode forwards while it judges: the verdict cannot change the request anyway."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import openai
import pytest
from servers import FakeUpstream, Guard, running_guard

from guard.decisions import Mode
from guard.engine import Engine
from guard.scoring import HarmScore
from guard.testing import KeywordScorer


class WaitsForUpstream(KeywordScorer):
    """Scores a prompt only once the upstream has the request, or gives up after 1.5 s.

    A guard that judged before forwarding would make it give up: the test then fails on
    the verdict (a scoring error, fail-open) instead of passing.
    """

    def __init__(self, fake: FakeUpstream) -> None:
        super().__init__()
        self.fake = fake
        self.saw_upstream_first: list[bool] = []

    async def score_prompts(self, texts: Sequence[str]) -> list[HarmScore]:
        for _ in range(150):  # 1.5 s, inside the policy's 2 s scoring timeout
            if self.fake.chat_requests():
                break
            await asyncio.sleep(0.01)
        self.saw_upstream_first.append(bool(self.fake.chat_requests()))
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
