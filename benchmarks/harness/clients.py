"""Python clients for what wrk cannot time: streamed chunks and growing conversations.

Both run at concurrency 1 with a keep-alive ``httpx.Client`` in the harness process, and
every figure they feed is a difference against the direct target timed the same way, so
the client's own cost cancels out.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
import time
import uuid
from dataclasses import dataclass

import httpx

from benchmarks.harness import payload
from benchmarks.harness.targets import Target

CONVERSATION_HEADER = "x-guard-conversation-id"


@dataclass(frozen=True)
class StreamTiming:
    """One streamed reply as the client saw it (milliseconds from sending the request)."""

    first_token_ms: float
    gaps_ms: tuple[float, ...]  # between successive events that carried content
    total_ms: float
    text: str


def _content(event: bytes) -> str | None:
    data = event.removeprefix(b"data: ").strip()
    if not data or data == b"[DONE]":
        return None
    choices = json.loads(data).get("choices") or [{}]
    content = (choices[0].get("delta") or {}).get("content")
    return content if isinstance(content, str) and content else None


def stream_once(client: httpx.Client, target: Target, body: str) -> StreamTiming:
    """POST a streaming chat request and time every content-bearing event."""
    stamps: list[float] = []
    parts: list[str] = []
    buffer = b""
    started = time.perf_counter()
    with client.stream("POST", target.url(), content=body, headers=_headers(target)) as reply:
        reply.raise_for_status()
        for raw in reply.iter_raw():
            now = time.perf_counter()
            buffer += raw
            *events, buffer = re.split(rb"\r?\n\r?\n", buffer)
            for event in events:
                text = _content(event)
                if text is not None:
                    stamps.append(now)
                    parts.append(text)
    ended = time.perf_counter()
    if not stamps:
        raise RuntimeError(f"{target.name}: stream carried no content")
    gaps = tuple((b - a) * 1000 for a, b in itertools.pairwise(stamps))
    return StreamTiming(
        (stamps[0] - started) * 1000, gaps, (ended - started) * 1000, "".join(parts)
    )


@dataclass(frozen=True)
class StreamSummary:
    target: str
    streams: int
    first_token_p50_ms: float
    gap_p50_ms: float
    gap_p99_ms: float
    events_per_stream: float
    total_p50_ms: float


def stream_summary(target: Target, streams: int) -> StreamSummary:
    with httpx.Client(timeout=30) as client:
        stream_once(client, target, payload.single_turn(stream=True))  # warm the connection
        timings = [
            stream_once(client, target, payload.single_turn(stream=True)) for _ in range(streams)
        ]
    gaps = sorted(g for t in timings for g in t.gaps_ms)
    return StreamSummary(
        target=target.name,
        streams=streams,
        first_token_p50_ms=statistics.median(t.first_token_ms for t in timings),
        gap_p50_ms=statistics.median(gaps) if gaps else float("nan"),
        gap_p99_ms=gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))] if gaps else float("nan"),
        events_per_stream=statistics.mean(len(t.gaps_ms) + 1 for t in timings),
        total_p50_ms=statistics.median(t.total_ms for t in timings),
    )


def _headers(target: Target, conversation: str | None = None) -> dict[str, str]:
    headers = {"content-type": "application/json", **target.headers}
    if conversation:
        headers[CONVERSATION_HEADER] = conversation
    return headers


@dataclass(frozen=True)
class TurnTiming:
    """Turn ``turn`` of one conversation: the guard's and the direct upstream's latency."""

    turn: int
    guard_ms: float
    direct_ms: float
    decision: str
    request_bytes: int


def conversation(
    guard: Target,
    direct: Target,
    turns: int,
    connections: tuple[httpx.Client, httpx.Client] | None = None,
) -> list[TurnTiming]:
    """Play one conversation of ``turns`` turns, history carried in each request.

    Each turn's body goes to the guard (with an explicit conversation id, so memory state
    continues) and then, byte for byte, to the upstream directly; the assistant reply the
    guard relayed goes into the history, as a client would keep it.  ``connections``
    (guard client, direct client) are kept alive across conversations, so no turn pays for
    opening a connection: a new conversation is not a new connection.
    """
    if connections is None:
        with httpx.Client(timeout=60) as g_client, httpx.Client(timeout=60) as d_client:
            return conversation(guard, direct, turns, (g_client, d_client))
    g_client, d_client = connections
    conversation_id = f"bench-{uuid.uuid4().hex}"
    history: list[dict[str, str]] = []
    timings: list[TurnTiming] = []
    for turn in range(1, turns + 1):
        history.append({"role": "user", "content": payload.fresh_user_text()})
        body = payload.chat_body(history)
        started = time.perf_counter()
        reply = g_client.post(guard.url(), content=body, headers=_headers(guard, conversation_id))
        guard_ms = (time.perf_counter() - started) * 1000
        reply.raise_for_status()
        started = time.perf_counter()
        d_client.post(direct.url(), content=body, headers=_headers(direct)).raise_for_status()
        direct_ms = (time.perf_counter() - started) * 1000
        content = reply.json()["choices"][0]["message"]["content"]
        history.append({"role": "assistant", "content": content})
        timings.append(
            TurnTiming(
                turn, guard_ms, direct_ms, reply.headers.get("x-guard-decision", "?"), len(body)
            )
        )
    return timings
