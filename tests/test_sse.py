from __future__ import annotations

import json
import random

import pytest

from guard.errors import UpstreamBadResponse
from guard.sse import SSEEvent, SSEParser, chunk_facts

STREAM = (
    b'data: {"id":"c1","model":"m","created":7,'
    b'"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
    b": keep-alive\n\n"
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]}\r\n\r\n'
    b'event: note\ndata: {"id":"c1",\ndata: "choices":[{"index":0,"delta":{"content":"lo"}}]}\r\r'
    b"data: [DONE]\n\n"
)


def parse_in_pieces(data: bytes, sizes: list[int]) -> tuple[list[SSEEvent], SSEEvent | None]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    position = 0
    for size in sizes:
        events += parser.feed(data[position : position + size])
        position += size
    events += parser.feed(data[position:])
    return events, parser.close()


@pytest.mark.parametrize("seed", range(20))
def test_events_and_raw_bytes_survive_any_split(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [rng.randrange(1, 9) for _ in range(rng.randrange(0, 60))]
    events, tail = parse_in_pieces(STREAM, sizes)
    assert tail is None
    assert b"".join(event.raw for event in events) == STREAM
    assert [chunk_facts(event).text for event in events] == ["", "", "Hel", "lo", ""]
    assert events[3].event == "note"
    assert events[-1].is_done


def test_crlf_split_between_reads_is_one_line_ending() -> None:
    events, _ = parse_in_pieces(b"data: a\r\n\r\ndata: b\r\n\r\n", [8, 1, 1, 1])
    assert [event.data for event in events] == ["a", "b"]


def test_unterminated_last_event_is_returned_on_close() -> None:
    events, tail = parse_in_pieces(b'data: {"choices":[]}\n\ndata: [DONE]', [])
    assert len(events) == 1
    assert tail is not None and tail.is_done and tail.raw == b"data: [DONE]"


def test_chunk_facts_reads_identity_refusal_and_tool_arguments() -> None:
    payload = {
        "id": "chatcmpl-9",
        "model": "gpt",
        "created": 123,
        "choices": [
            {"index": 1, "delta": {"content": "other choice"}},
            {"index": 0, "delta": {"refusal": "No. ", "tool_calls": [
                {"index": 0, "function": {"arguments": "{\"a\":"}}]}},
        ],
    }  # fmt: skip
    facts = chunk_facts(SSEEvent(raw=b"", data=json.dumps(payload)))
    assert facts.text == 'No. {"a":'
    assert facts.texts == {0: 'No. {"a":', 1: "other choice"}
    assert (facts.completion_id, facts.model, facts.created) == ("chatcmpl-9", "gpt", 123)


@pytest.mark.parametrize(
    "data", [None, "[DONE]", "not json", "[1]", '{"choices": "x"}', "[" * 5000]
)
def test_chunk_facts_of_anything_else_is_empty(data: str | None) -> None:
    assert chunk_facts(SSEEvent(raw=b"", data=data)).text == ""


def test_an_endless_event_is_refused() -> None:
    parser = SSEParser(max_event_bytes=1024)
    parser.feed(b"data: " + b"x" * 1000)
    with pytest.raises(UpstreamBadResponse):
        parser.feed(b"x" * 100)


@pytest.mark.parametrize("index", [-1, 128, 10**9, "1", True, None])
def test_an_odd_choice_index_is_judged_as_choice_0(index: object) -> None:
    payload = {"choices": [{"index": index, "delta": {"content": "text"}}]}
    assert chunk_facts(SSEEvent(raw=b"", data=json.dumps(payload))).texts == {0: "text"}


def test_chunk_facts_read_the_deprecated_function_call() -> None:
    payload = {"choices": [{"index": 0, "delta": {"function_call": {"arguments": '{"q": 1'}}}]}
    assert chunk_facts(SSEEvent(raw=b"", data=json.dumps(payload))).text == '{"q": 1'
