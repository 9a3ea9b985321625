from __future__ import annotations

import json

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from guard.errors import InvalidJSON, InvalidRequest
from guard.openai_api import (
    DONE_EVENT,
    StreamIdentity,
    chunk_events,
    completion,
    error_body,
    parse_chat_request,
    reply_text,
    reply_texts,
    rewritten_completion,
    stream_error_event,
    with_choice_texts,
)


def test_parse_keeps_body_and_flattens_every_message_kind() -> None:
    body = json.dumps({
        "model": "m",
        "stream": True,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "look"},
                                         {"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "1", "type": "function",
                             "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "1", "content": "result"},
            {"role": "user", "content": "bad \ud800 surrogate"},
        ],
    }).encode()  # fmt: skip
    chat = parse_chat_request(body)
    assert chat.body is body
    assert (chat.model, chat.stream) == ("m", True)
    texts = [(m.role, m.text) for m in chat.conversation.messages]
    assert texts[:4] == [("system", "be brief"), ("user", "look"), ("assistant", "f({})"),
                         ("tool", "result")]  # fmt: skip
    assert chat.conversation.last_user_text == "bad \ufffd surrogate"
    chat.conversation.last_user_text.encode("utf-8")  # safe for every later consumer


@pytest.mark.parametrize(
    ("body", "error", "param"),
    [
        (b"", InvalidJSON, None),
        (b"[" * 100_000, InvalidJSON, None),
        (b'"text"', InvalidRequest, None),
        (b'{"messages": null}', InvalidRequest, "messages"),
        (b'{"messages": [{"role": "user", "content": {"a": 1}}]}', InvalidRequest,
         "messages[0].content"),
    ],
)  # fmt: skip
def test_parse_refuses_with_the_parameter_named(
    body: bytes, error: type[Exception], param: str | None
) -> None:
    with pytest.raises(error) as caught:
        parse_chat_request(body)
    assert getattr(caught.value, "param", None) == param


def test_error_body_has_openais_shape() -> None:
    assert json.loads(error_body("m", "t", "p", "c")) == {
        "error": {"message": "m", "type": "t", "param": "p", "code": "c"}
    }


def test_guard_completion_parses_with_the_sdk_types() -> None:
    parsed = ChatCompletion.model_validate_json(completion("No, because.", model="m"))
    assert parsed.choices[0].message.content == "No, because."
    assert parsed.choices[0].finish_reason == "stop"
    assert parsed.model == "m" and parsed.id.startswith("chatcmpl-")


def test_rewrite_replaces_every_choice_and_keeps_identity() -> None:
    upstream = {
        "id": "chatcmpl-up", "object": "chat.completion", "created": 5, "model": "up",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "leak"},
             "finish_reason": "length"},
            {"index": 1, "message": {"role": "assistant", "content": "leak too"},
             "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }  # fmt: skip
    assert reply_text(upstream) == "leak"
    parsed = ChatCompletion.model_validate_json(rewritten_completion(upstream, "safe"))
    assert [c.message.content for c in parsed.choices] == ["safe", "safe"]
    assert (parsed.id, parsed.model, parsed.usage and parsed.usage.total_tokens) == (
        "chatcmpl-up",
        "up",
        3,
    )


def test_reply_text_reads_the_deprecated_function_call() -> None:
    message = {"role": "assistant", "content": None,
               "function_call": {"name": "run", "arguments": '{"cmd": "rm -rf /"}'}}  # fmt: skip
    assert reply_text({"choices": [{"message": message}]}) == 'run({"cmd": "rm -rf /"})'


def test_reply_text_of_odd_completions_is_none() -> None:
    assert reply_text({}) is None
    assert reply_text({"choices": []}) is None
    assert reply_text({"choices": ["x"]}) is None


def test_every_choice_is_read_and_one_can_be_replaced_alone() -> None:
    upstream = {
        "id": "chatcmpl-n", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "first"},
             "finish_reason": "stop", "logprobs": None},
            {"index": 1, "message": {"role": "assistant", "content": "second"},
             "finish_reason": "length", "logprobs": None},
            "not a choice",
        ],
    }  # fmt: skip
    assert reply_texts(upstream) == ["first", "second", ""]
    assert reply_texts({"choices": "x"}) == []
    upstream["choices"].pop()
    parsed = ChatCompletion.model_validate_json(with_choice_texts(upstream, {1: "guard"}))
    assert [c.message.content for c in parsed.choices] == ["first", "guard"]
    assert [c.index for c in parsed.choices] == [0, 1]
    assert parsed.choices[0].finish_reason == "stop" and parsed.id == "chatcmpl-n"


def test_a_replaced_choice_of_a_stream_ends_every_choice() -> None:
    events = chunk_events("guard", StreamIdentity("c", "m", 1), index=2, also_ends=(0, 1))
    chunks = [
        ChatCompletionChunk.model_validate_json(event.removeprefix(b"data: "))
        for event in events[:-1]
    ]
    assert {c.choices[0].index for c in chunks if c.choices[0].delta.content} == {2}
    assert [c.choices[0].index for c in chunks if c.choices[0].finish_reason] == [0, 1, 2]


def test_chunk_events_form_a_valid_stream() -> None:
    identity = StreamIdentity("chatcmpl-s", "m", 9)
    events = chunk_events("Hello", identity)
    assert events[-1] == DONE_EVENT
    chunks = [
        ChatCompletionChunk.model_validate_json(event.removeprefix(b"data: "))
        for event in events[:-1]
    ]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.id for c in chunks} == {"chatcmpl-s"}
    assert len(chunk_events("x", identity, with_role=False)) == 3


def test_stream_error_event_carries_an_openai_error() -> None:
    payload = json.loads(
        stream_error_event("broken", "upstream_unavailable").removeprefix(b"data: ")
    )
    assert payload["error"]["code"] == "upstream_unavailable"
    assert issubclass(openai.APIError, Exception)
