"""Incremental server-sent events parsing that keeps every event's raw bytes.

The relay must send upstream events on unchanged, so :class:`SSEParser` splits the byte
stream at event boundaries (any of ``\\n``, ``\\r\\n``, ``\\r`` line endings, split
across reads anywhere) and hands back each event's exact bytes with its parsed fields;
:func:`chunk_facts` reads the delta text and identity of a chat completion chunk.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guard.errors import UpstreamBadResponse


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One event: its exact bytes (with the terminating blank line) and its fields."""

    raw: bytes
    data: str | None = None
    event: str | None = None

    @property
    def is_done(self) -> bool:
        return self.data is not None and self.data.strip() == "[DONE]"


class SSEParser:
    """Feed bytes as they arrive; get back every event completed so far."""

    def __init__(self, max_event_bytes: int = 4 * 1024 * 1024) -> None:
        self._max = max_event_bytes
        self._buf = b""
        self._pos = 0  # next unread byte
        self._data: list[str] = []
        self._event: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buf += chunk
        self._pos = 0
        events: list[SSEEvent] = []
        start = 0
        while True:
            line_end, after = self._next_line(self._pos)
            if line_end < 0:
                break
            line = self._buf[self._pos : line_end]
            self._pos = after
            if line:
                self._field(line)
                continue
            events.append(self._emit(self._buf[start:after]))
            start = after
        # Keep the unfinished event's bytes from its start; fields seen are re-parsed.
        self._buf = self._buf[start:]
        self._pos = 0
        self._data, self._event = [], None
        if len(self._buf) > self._max:
            raise UpstreamBadResponse(f"an SSE event is larger than {self._max} bytes")
        return events

    def close(self) -> SSEEvent | None:
        """The stream ended: an unterminated last event, if any bytes remain."""
        rest, self._buf, self._pos = self._buf, b"", 0
        self._data, self._event = [], None
        if not rest:
            return None
        for line in rest.splitlines():
            if line:
                self._field(line)
        return self._emit(rest)

    def _next_line(self, pos: int) -> tuple[int, int]:
        buf = self._buf
        newline = buf.find(b"\n", pos)
        cr = buf.find(b"\r", pos, newline if newline >= 0 else len(buf))
        if cr >= 0:
            if cr + 1 == len(buf):
                return -1, -1  # a lone CR at the end may be the first half of CRLF
            return cr, cr + 2 if buf[cr + 1 : cr + 2] == b"\n" else cr + 1
        if newline >= 0:
            return newline, newline + 1
        return -1, -1

    def _field(self, line: bytes) -> None:
        if line.startswith(b":"):
            return  # comment (keep-alive)
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")

    def _emit(self, raw: bytes) -> SSEEvent:
        data = "\n".join(self._data) if self._data else None
        event = SSEEvent(raw=raw, data=data, event=self._event)
        self._data, self._event = [], None
        return event


# OpenAI's own limit on ``n``; an index outside 0..MAX_CHOICES-1 is judged as choice 0's.
MAX_CHOICES = 128


@dataclass(frozen=True, slots=True)
class ChunkFacts:
    """What the relay needs from one ``chat.completion.chunk``."""

    texts: Mapping[int, str] = field(default_factory=dict)  # delta text by choice index
    completion_id: str | None = None
    model: str | None = None
    created: int | None = None

    @property
    def text(self) -> str:
        """Choice 0's delta text."""
        return self.texts.get(0, "")


_NO_FACTS = ChunkFacts()


def _choice_index(choice: Mapping[str, Any]) -> int:
    index = choice.get("index", 0)
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < MAX_CHOICES:
        return index
    return 0


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _delta_text(delta: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for key in ("content", "refusal"):
        value = delta.get(key)
        if isinstance(value, str):
            parts.append(value)
    functions: list[Any] = [delta.get("function_call")]  # the deprecated form first
    tool_calls = delta.get("tool_calls")
    if isinstance(tool_calls, Sequence) and not isinstance(tool_calls, str):
        functions += [call.get("function") for call in tool_calls if isinstance(call, Mapping)]
    for function in functions:
        arguments = function.get("arguments") if isinstance(function, Mapping) else None
        if isinstance(arguments, str):
            parts.append(arguments)
    return "".join(parts)


def chunk_facts(event: SSEEvent) -> ChunkFacts:
    """Delta text by choice and the stream identity; empty for anything else."""
    if event.data is None or event.is_done:
        return _NO_FACTS
    try:
        payload = json.loads(event.data)
    except (ValueError, RecursionError):
        return _NO_FACTS
    if not isinstance(payload, Mapping):
        return _NO_FACTS
    texts: dict[int, str] = {}
    choices = payload.get("choices")
    if isinstance(choices, Sequence) and not isinstance(choices, str):
        for choice in choices:
            if not isinstance(choice, Mapping):
                continue
            delta = choice.get("delta")
            if isinstance(delta, Mapping):
                index = _choice_index(choice)
                text = _LONE_SURROGATE.sub("\ufffd", _delta_text(delta))
                texts[index] = texts.get(index, "") + text
    completion_id = payload.get("id")
    model = payload.get("model")
    created = payload.get("created")
    return ChunkFacts(
        texts=texts,
        completion_id=completion_id if isinstance(completion_id, str) else None,
        model=model if isinstance(model, str) else None,
        created=created if isinstance(created, int) and not isinstance(created, bool) else None,
    )
