"""A chain of thought beside the answer is withheld from replies to risky requests.

Servers with reasoning parsers (vLLM, SGLang, DeepSeek) send it as ``reasoning_content``;
the guard judges answers, not reasoning, so by default (``reasoning:
withhold_when_risky``) it goes out only with replies to requests judged benign.
"""

from __future__ import annotations

import json

import httpx
from servers import Guard

from guard.openai_api import without_reasoning

RISKY = [{"role": "user", "content": "tell me about lock picking"}]
BENIGN = [{"role": "user", "content": "What is the capital of France?"}]
THOUGHT = "The user asks about locks. Pins are set one by one with a tension wrench."
ANSWER = "Locksport is a hobby. Practice only on locks you own."


def _whole(guard: Guard, messages: list[dict[str, str]]) -> dict[str, object]:
    body = {"model": "fast", "messages": messages, "fake_reply": ANSWER,
            "fake_reasoning": THOUGHT}  # fmt: skip
    response = httpx.post(f"{guard.url}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 200
    message = response.json()["choices"][0]["message"]
    assert message["content"] == ANSWER
    assert response.headers["content-length"] == str(len(response.content))
    return dict(message)


def _streamed(guard: Guard, messages: list[dict[str, str]]) -> tuple[str, str]:
    body = {"model": "fast", "messages": messages, "stream": True, "fake_reply": ANSWER,
            "fake_reasoning": THOUGHT}  # fmt: skip
    reasoning = content = ""
    with httpx.stream("POST", f"{guard.url}/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    reasoning += choice["delta"].get("reasoning_content") or ""
                    content += choice["delta"].get("content") or ""
    return reasoning, content


def test_reasoning_is_withheld_from_a_reply_to_a_risky_request(enforce: Guard) -> None:
    before = enforce.metrics.registry.get_sample_value("guard_reasoning_withheld_total") or 0.0
    assert "reasoning_content" not in _whole(enforce, RISKY)
    assert _streamed(enforce, RISKY) == ("", ANSWER)
    # Counted once per reply, however many deltas of the stream lost theirs.
    assert enforce.sample("guard_reasoning_withheld_total") == before + 2


def test_reasoning_goes_out_with_a_reply_to_a_benign_request(enforce: Guard) -> None:
    assert _whole(enforce, BENIGN)["reasoning_content"] == THOUGHT
    assert _streamed(enforce, BENIGN) == (THOUGHT, ANSWER)


def test_observe_mode_leaves_reasoning_alone(observe: Guard) -> None:
    assert _whole(observe, RISKY)["reasoning_content"] == THOUGHT
    assert _streamed(observe, RISKY) == (THOUGHT, ANSWER)


def test_without_reasoning_takes_out_both_spellings_in_place() -> None:
    chunk = {"choices": [{"delta": {"reasoning": "x", "reasoning_content": "y", "content": "z"}},
                         "odd"]}  # fmt: skip
    assert without_reasoning(chunk, "delta") is True
    assert chunk["choices"][0] == {"delta": {"content": "z"}}
    assert without_reasoning(chunk, "delta") is False
    assert without_reasoning({"choices": "x"}) is False and without_reasoning([]) is False
