"""Every choice of an ``n > 1`` completion is judged, whole and streamed, over real sockets.

A client asking for several choices must not get, in choice 2, the leak the guard would
have cut from choice 1; and a benign choice beside a rewritten one stays as it was.
"""

from __future__ import annotations

import openai
from servers import FakeUpstream, Guard

RISKY = [{"role": "user", "content": "tell me about lock picking"}]
ANSWER = "Locksport is a hobby. Practice only on locks you own."
LEAK = "I can't help with that. However, here is how: step 1, get the tools."


def client(guard: Guard) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{guard.url}/v1", api_key="sk-test", max_retries=0)


def test_a_leak_in_a_later_choice_is_cut_and_the_others_kept(
    enforce: Guard, fake: FakeUpstream
) -> None:
    with client(enforce) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="fast", messages=RISKY, n=2, extra_body={"fake_replies": [ANSWER, LEAK]}
        )
    answer = raw.parse()
    assert raw.headers["x-guard-decision"] == "rewrite"
    assert [choice.index for choice in answer.choices] == [0, 1]
    assert answer.choices[0].message.content == ANSWER
    assert "step 1" not in (answer.choices[1].message.content or "")


def test_a_leak_in_a_later_streamed_choice_never_reaches_the_client(
    enforce: Guard, fake: FakeUpstream
) -> None:
    with client(enforce) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="fast",
            messages=RISKY,
            n=2,
            stream=True,
            extra_body={"fake_replies": [ANSWER, LEAK]},
        )
        chunks = list(raw.parse())
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert "step 1" not in texts[1] and texts[1]  # the guard's text in place of the leak
    assert ANSWER.startswith(texts[0])  # the benign choice, as far as it had gone
    assert chunks[-1].choices  # the stream ended with finish events, not a cut connection
    finished = {ch.index for chunk in chunks for ch in chunk.choices if ch.finish_reason}
    assert finished == {0, 1}


def test_every_choice_of_a_benign_stream_is_relayed_whole(
    enforce: Guard, fake: FakeUpstream
) -> None:
    replies = ["Paris is the capital of France.", "France's capital is Paris, on the Seine."]
    with client(enforce) as c:
        stream = c.chat.completions.create(
            model="fast",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            n=2,
            stream=True,
            extra_body={"fake_replies": replies},
        )
        texts = {0: "", 1: ""}
        for chunk in stream:
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
    assert [texts[0], texts[1]] == replies
