"""The OpenAI chat completions wire format, and nothing else.

Parses and validates a request body into a :class:`ChatRequest` (raising
:class:`guard.errors.InvalidJSON` / :class:`guard.errors.InvalidRequest` naming the
parameter), writes OpenAI error bodies, and builds the chat completion objects and SSE
chunk streams for replies the guard writes itself, so every SDK parses them.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guard.conversation import ROLES, Conversation, Message, message_text
from guard.errors import InvalidJSON, InvalidRequest

DONE_EVENT = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat completion request; ``body`` is forwarded byte for byte."""

    body: bytes
    conversation: Conversation
    model: str | None
    stream: bool


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean(text: str) -> str:
    # JSON may carry lone surrogates ("\ud800"); they cannot be encoded as UTF-8 later
    # (tokenizer, hashing, logs), so they become U+FFFD here, once.
    return _LONE_SURROGATE.sub("\ufffd", text)


def _check_content(content: Any, param: str) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(f"{param} must be a string or an array of content parts.", param=param)
    for index, part in enumerate(content):
        if not isinstance(part, Mapping | str):
            raise InvalidRequest(
                f"{param}[{index}] must be a content part object.", param=f"{param}[{index}]"
            )


def _check_message(message: Any, index: int) -> Message:
    param = f"messages[{index}]"
    if not isinstance(message, Mapping):
        raise InvalidRequest(f"{param} must be an object.", param=param)
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        allowed = ", ".join(sorted(ROLES))
        raise InvalidRequest(f"{param}.role must be one of: {allowed}.", param=f"{param}.role")
    _check_content(message.get("content"), f"{param}.content")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and not isinstance(tool_calls, list):
        raise InvalidRequest(f"{param}.tool_calls must be an array.", param=f"{param}.tool_calls")
    return Message(role=role, text=_clean(message_text(message)))


def parse_chat_request(body: bytes) -> ChatRequest:
    """Validate a chat completion request body; raise a :class:`RequestError` if unusable."""
    try:
        data = json.loads(body)
    except RecursionError as exc:
        raise InvalidJSON("Request body is nested too deeply.") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidJSON("Request body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("Request body must be a JSON object.")
    if "messages" not in data:
        raise InvalidRequest("Missing required parameter: 'messages'.", param="messages")
    messages = data["messages"]
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' must be an array.", param="messages")
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("'model' must be a string.", param="model")
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    conversation = Conversation(
        tuple(_check_message(message, index) for index, message in enumerate(messages))
    )
    return ChatRequest(
        body=body,
        conversation=conversation,
        model=_clean(model) if model is not None else None,
        stream=bool(stream),
    )


def with_system_message(body: bytes, text: str) -> bytes:
    """A validated request body with ``text`` appended as a final system message."""
    data = json.loads(body)
    data["messages"] = [*data["messages"], {"role": "system", "content": text}]
    data.pop("stream", None)  # a retry is only ever asked for a whole reply
    return json.dumps(data).encode()


def error_body(message: str, error_type: str, param: str | None, code: str | None) -> bytes:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    payload = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return json.dumps(payload).encode()


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion(text: str, *, model: str | None, completion_id: str | None = None) -> bytes:
    """A complete ``chat.completion`` object answering with ``text``."""
    payload = {
        "id": completion_id or new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or "guard",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
    return json.dumps(payload).encode()


def reply_text(completion_object: Mapping[str, Any]) -> str | None:
    """Text of ``choices[0]`` of an upstream completion, or None when it has none."""
    choices = completion_object.get("choices")
    if not isinstance(choices, Sequence) or isinstance(choices, str) or not choices:
        return None
    first = choices[0]
    message = first.get("message") if isinstance(first, Mapping) else None
    if not isinstance(message, Mapping):
        return None
    return _clean(message_text(message))


# Where servers put a model's chain of thought beside its answer (vLLM, SGLang, DeepSeek).
REASONING_FIELDS = ("reasoning_content", "reasoning")


def without_reasoning(completion_object: Any, part: str = "message") -> bool:
    """Drop every choice's reasoning fields (``part``: message, or delta in a chunk) in
    place; True when there was any."""
    choices = completion_object.get("choices") if isinstance(completion_object, dict) else None
    found = False
    for choice in choices if isinstance(choices, list) else ():
        holder = choice.get(part) if isinstance(choice, dict) else None
        if isinstance(holder, dict):
            for name in REASONING_FIELDS:
                found = holder.pop(name, None) is not None or found
    return found


def reply_texts(completion_object: Mapping[str, Any]) -> list[str]:
    """Text of every choice of an upstream completion, in order ("" where one has none)."""
    choices = completion_object.get("choices")
    if not isinstance(choices, list):
        return []
    texts = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, Mapping) else None
        texts.append(_clean(message_text(message)) if isinstance(message, Mapping) else "")
    return texts


def with_choice_texts(upstream: Mapping[str, Any], texts: Mapping[int, str]) -> bytes:
    """The upstream's completion with the choices at ``texts``' positions replaced."""
    payload = dict(upstream)
    choices = list(payload.get("choices") or [])
    for position, text in texts.items():
        choice = choices[position]
        index = choice.get("index", position) if isinstance(choice, Mapping) else position
        choices[position] = _guard_choice(index, text)
    payload["choices"] = choices
    return json.dumps(payload).encode()


def _guard_choice(index: Any, text: str) -> dict[str, Any]:
    """A completion choice carrying the guard's ``text``."""
    return {
        "index": index,
        "message": {"role": "assistant", "content": text, "refusal": None},
        "logprobs": None,
        "finish_reason": "stop",
    }


def rewritten_completion(upstream: Mapping[str, Any], text: str) -> bytes:
    """The upstream's completion with every choice's message replaced by ``text``.

    Every choice is replaced, not only the judged first one, so ``n > 1`` cannot carry
    the content the guard cut.  id, model, created and usage stay as the upstream sent.
    """
    payload = dict(upstream)
    choices = payload.get("choices")
    count = len(choices) if isinstance(choices, list) and choices else 1
    payload["choices"] = [_guard_choice(index, text) for index in range(count)]
    payload.setdefault("object", "chat.completion")
    return json.dumps(payload).encode()


@dataclass(frozen=True, slots=True)
class StreamIdentity:
    """What every chunk of one stream repeats, so replacement chunks blend in."""

    completion_id: str
    model: str
    created: int

    @classmethod
    def fresh(cls, model: str | None) -> StreamIdentity:
        return cls(new_completion_id(), model or "guard", int(time.time()))


def _chunk_event(
    identity: StreamIdentity, delta: dict[str, Any], finish: str | None, index: int = 0
) -> bytes:
    payload = {
        "id": identity.completion_id,
        "object": "chat.completion.chunk",
        "created": identity.created,
        "model": identity.model,
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def chunk_events(
    text: str,
    identity: StreamIdentity,
    *,
    with_role: bool = True,
    index: int = 0,
    also_ends: Sequence[int] = (),
) -> list[bytes]:
    """SSE events answering with ``text`` as choice ``index``: role, content, finish
    ``stop`` (for ``also_ends`` too, the other choices of an ``n`` > 1 stream), ``[DONE]``."""
    events: list[bytes] = []
    if with_role:
        events.append(_chunk_event(identity, {"role": "assistant", "content": ""}, None, index))
    events.append(_chunk_event(identity, {"content": text}, None, index))
    for ended in sorted({index, *also_ends}):
        events.append(_chunk_event(identity, {}, "stop", ended))
    events.append(DONE_EVENT)
    return events


def stream_error_event(message: str, code: str) -> bytes:
    """An SSE event carrying an OpenAI error; SDKs raise it instead of hanging."""
    payload = {"error": {"message": message, "type": "upstream_error", "param": None, "code": code}}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
