"""Judging one chat completion exchange, written once for both front doors.

:class:`ChatRelay` reads and validates the request, asks the engine, and either answers
itself (block) or opens the upstream through a ``forward`` callable the front door
supplies (the upstream client for the proxy, the wrapped app for the middleware), then judges the
reply whole (here) or as a stream (:mod:`guard.relay_stream`) and sends what the
verdicts say over ASGI ``send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from guard.decisions import (
    Action,
    GuardRequest,
    Mode,
    ReplyVerdict,
    RequestVerdict,
    stronger,
)
from guard.engine import Engine
from guard.errors import RequestError, UpstreamBadResponse, UpstreamError
from guard.http_edge import (
    ClientDisconnected,
    Headers,
    Receive,
    Responder,
    Scope,
    Send,
    check_json_content_type,
    decision_headers,
    first_header,
    header_text,
    read_body,
    request_id_for,
    unless_disconnected,
    without_hop_by_hop,
)
from guard.logs import bound_request, get_logger
from guard.metrics import GuardMetrics
from guard.openai_api import (
    ChatRequest,
    StreamIdentity,
    chunk_events,
    completion,
    parse_chat_request,
    reply_text,
    reply_texts,
    rewritten_completion,
    stream_error_event,
    with_choice_texts,
    with_system_message,
    without_reasoning,
)
from guard.relay_record import ChatRecord, account
from guard.relay_stream import BODY_FRAMING, relay_stream
from guard.settings import Settings
from guard.upstream import upstream_kind

log = get_logger("guard.relay")

_JSON = (b"content-type", b"application/json")
_SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


class Reply(Protocol):
    """The upstream's answer as the relay needs it, whoever produced it."""

    status: int
    headers: Headers

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...


Forward = Callable[[ChatRequest, str], AbstractAsyncContextManager[Reply]]


class ChatRelay:
    """The guarded chat completion path; one instance per front door."""

    def __init__(self, engine: Engine, metrics: GuardMetrics, settings: Settings) -> None:
        self.engine = engine
        self.metrics = metrics
        self.settings = settings

    async def handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        forward: Forward,
        *,
        watch_disconnect: bool = True,
    ) -> None:
        """Serve one ``POST .../chat/completions``; never raises for a bad request."""
        started = time.perf_counter()
        record = ChatRecord(request_id_for(scope, self.settings.server.request_id_header))
        responder = Responder(send)
        with bound_request(record.request_id):
            try:
                await self._guarded(scope, receive, responder, forward, record, watch_disconnect)
            except ClientDisconnected:
                record.error = "client_disconnected"
            except Exception as exc:
                await self._fail(exc, responder, record)
            finally:
                account(record, responder, time.perf_counter() - started, self.metrics)

    async def _guarded(
        self,
        scope: Scope,
        receive: Receive,
        responder: Responder,
        forward: Forward,
        record: ChatRecord,
        watch_disconnect: bool,
    ) -> None:
        check_json_content_type(scope)
        body = await read_body(scope, receive, self.settings.server.max_body_bytes)
        record.request_bytes = len(body)
        begun = time.perf_counter()
        chat = parse_chat_request(body)
        record.stream = chat.stream
        if self.settings.logging.include_content:
            record.prompt = chat.conversation.last_user_text
        request = self._guard_request(scope, chat, record.request_id)
        policies = self.engine.policies
        shadow = policies.shadow
        if shadow or policies.general.forward_while_judging:
            # Judge while the upstream works; the verdict is awaited only once the
            # reply's head is there, or (enforce) a block ends the exchange early.
            judging = asyncio.ensure_future(self._judge_request(request, record, begun))
            if shadow:
                exchange = self._exchange(responder, chat, request, judging, forward, record)
            else:
                exchange = self._forward_while_judging(
                    responder, chat, request, judging, forward, record
                )
        else:
            verdict = await self._judge_request(request, record, begun)
            if verdict.action is Action.BLOCK:
                await self._answer(responder, chat, verdict.reply_text or "", record)
                return
            exchange = self._exchange(responder, chat, request, verdict, forward, record)
        if not watch_disconnect:
            await exchange
            return
        await unless_disconnected(exchange, receive)

    async def _judge_request(
        self, request: GuardRequest, record: ChatRecord, begun: float
    ) -> RequestVerdict:
        verdict = await self.engine.check_request(request)
        record.request_overhead_s = time.perf_counter() - begun
        record.verdict, record.mode = verdict, verdict.mode
        record.decision = verdict.action
        record.would = verdict.would
        return verdict

    def _guard_request(self, scope: Scope, chat: ChatRequest, request_id: str) -> GuardRequest:
        memory = self.settings.memory
        tenant = None
        if memory.tenant_header:
            tenant = header_text(scope, memory.tenant_header)
        if tenant is None:
            authorization = header_text(scope, "authorization")
            if authorization and authorization.lower().startswith("bearer "):
                tenant = authorization[7:].strip() or None
        return GuardRequest(
            request_id=request_id,
            conversation=chat.conversation,
            tenant=tenant,
            conversation_id=header_text(scope, memory.conversation_header),
            model=chat.model,
            stream=chat.stream,
        )

    async def _answer(
        self, responder: Responder, chat: ChatRequest, text: str, record: ChatRecord
    ) -> None:
        """The guard's own reply to a blocked request, in the shape the client asked for."""
        headers = self.decision_headers(record)
        if chat.stream:
            events = chunk_events(text, StreamIdentity.fresh(chat.model))
            await responder.whole(200, _SSE_HEADERS + headers, b"".join(events))
            return
        body = completion(text, model=chat.model)
        length = (b"content-length", str(len(body)).encode())
        await responder.whole(200, [_JSON, length, *headers], body)

    async def _forward_while_judging(
        self,
        responder: Responder,
        chat: ChatRequest,
        request: GuardRequest,
        judging: asyncio.Future[RequestVerdict],
        forward: Forward,
        record: ChatRecord,
    ) -> None:
        """Enforce mode with the upstream called before the verdict.

        The client gets what judging first would have sent: a block is answered with the
        guard's refusal as soon as it is decided (the upstream call is cancelled, its reply
        never read), also when the upstream failed meanwhile; anything else is relayed and
        judged as usual.  The exchange sends nothing before it has the verdict, so
        cancelling it is always safe.
        """
        exchange = asyncio.ensure_future(
            self._exchange(responder, chat, request, asyncio.shield(judging), forward, record)
        )
        try:
            await asyncio.wait((exchange, judging), return_when=asyncio.FIRST_COMPLETED)
            if exchange.done() and exchange.exception() is not None:
                if (await judging).action is not Action.BLOCK:
                    exchange.result()  # the upstream's fault, for a request allowed through
            elif judging.result().action is not Action.BLOCK:
                await exchange  # it cannot end without the verdict, so judging is done
                return
            exchange.cancel()
            await asyncio.gather(exchange, return_exceptions=True)
            verdict = judging.result()
            await self._answer(responder, chat, verdict.reply_text or "", record)
        finally:
            for pending in (exchange, judging):
                if not pending.done():
                    pending.cancel()
            await asyncio.gather(exchange, judging, return_exceptions=True)

    async def _exchange(
        self,
        responder: Responder,
        chat: ChatRequest,
        request: GuardRequest,
        judged: RequestVerdict | asyncio.Future[RequestVerdict],
        forward: Forward,
        record: ChatRecord,
    ) -> None:
        """Forward ``chat`` and relay the reply; ``judged`` may still be in the making."""
        opened = time.perf_counter()
        try:
            async with forward(chat, record.request_id) as reply:
                record.upstream_s = time.perf_counter() - opened
                self.metrics.upstream_duration.observe(record.upstream_s)
                verdict = judged if isinstance(judged, RequestVerdict) else await judged
                if verdict.action is Action.BLOCK:
                    return  # judged while forwarding: the caller answers, the reply is dropped
                await self._relay(responder, chat, request, verdict, forward, record, reply)
        finally:
            if isinstance(judged, asyncio.Future) and not judged.done():
                judged.cancel()  # the upstream failed first: nothing left to judge
                with contextlib.suppress(asyncio.CancelledError):
                    await judged

    async def _relay(
        self,
        responder: Responder,
        chat: ChatRequest,
        request: GuardRequest,
        verdict: RequestVerdict,
        forward: Forward,
        record: ChatRecord,
        reply: Reply,
    ) -> None:
        """Relay an upstream reply whose head has arrived, judged against ``verdict``."""
        if not 200 <= reply.status < 300:
            # Errors of the upstream (401, 429, 400...) are the client's to see as-is.
            headers = without_hop_by_hop(reply.headers, b"content-encoding")
            headers = [(k, v) for k, v in headers if k != b"content-length"]
            await responder.start(reply.status, headers + self.decision_headers(record))
            async for chunk in reply.aiter_bytes():
                await responder.body(chunk)
            await responder.end()
            return
        content_type = first_header(reply.headers, b"content-type") or b""
        if content_type.lower().startswith(b"text/event-stream"):
            streams = self.engine.open_choice_streams(request, verdict)
            withhold = self.engine.withholds_reasoning(verdict)
            await relay_stream(self, responder, chat, streams, reply, record, withhold=withhold)
        else:
            await self._relay_whole(responder, request, verdict, reply, record, (chat, forward))

    async def _relay_whole(
        self,
        responder: Responder,
        request: GuardRequest,
        verdict: RequestVerdict,
        reply: Reply,
        record: ChatRecord,
        retry_with: tuple[ChatRequest, Forward],
    ) -> None:
        body = b"".join([chunk async for chunk in reply.aiter_bytes()])
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise UpstreamBadResponse("upstream completion is not JSON") from exc
        if not isinstance(payload, dict):
            raise UpstreamBadResponse("upstream completion is not a JSON object")
        if self.engine.withholds_reasoning(verdict) and without_reasoning(payload):
            body = json.dumps(payload).encode()
            self.metrics.reasoning_withheld.inc()
            log.info("reasoning_withheld", request_id=record.request_id)
        texts = reply_texts(payload)
        if len(texts) > 1:
            await self._relay_choices(
                responder, (request, verdict), reply, record, (payload, body), texts
            )
            return
        begun = time.perf_counter()
        judged = await self.engine.check_reply(request, verdict, texts[0] if texts else "")
        record.reply_overhead_s += time.perf_counter() - begun
        if judged.retry is not None:
            retried = await self._ask_again(*retry_with, judged.retry.clarification, record)
            begun = time.perf_counter()
            judged = await self.engine.check_retry(request, verdict, judged, retried)
            record.reply_overhead_s += time.perf_counter() - begun
        self.note_verdict(record, judged)
        headers = without_hop_by_hop(reply.headers, *BODY_FRAMING)
        if judged.action in (Action.REWRITE, Action.BLOCK):
            body = rewritten_completion(payload, judged.text or "")
            headers = [(k, v) for k, v in headers if k != b"content-type"] + [_JSON]
        headers.append((b"content-length", str(len(body)).encode()))
        await responder.whole(reply.status, headers + self.decision_headers(record), body)

    async def _relay_choices(
        self,
        responder: Responder,
        judging: tuple[GuardRequest, RequestVerdict],
        reply: Reply,
        record: ChatRecord,
        completion: tuple[dict[str, Any], bytes],
        texts: list[str],
    ) -> None:
        """A whole reply of ``n`` > 1 choices: each judged; those rewritten, replaced alone.

        ``completion`` is the upstream's reply parsed and as bytes (the bytes go out when
        nothing is replaced)."""
        payload, body = completion
        begun = time.perf_counter()
        verdicts = await self.engine.check_choices(*judging, texts)
        record.reply_overhead_s += time.perf_counter() - begun
        for judged in verdicts:
            self.note_verdict(record, judged)
        replaced = {
            position: judged.text or ""
            for position, judged in enumerate(verdicts)
            if judged.action in (Action.REWRITE, Action.BLOCK)
        }
        headers = without_hop_by_hop(reply.headers, *BODY_FRAMING)
        if replaced:
            body = with_choice_texts(payload, replaced)
            headers = [(k, v) for k, v in headers if k != b"content-type"] + [_JSON]
        headers.append((b"content-length", str(len(body)).encode()))
        await responder.whole(reply.status, headers + self.decision_headers(record), body)

    async def _ask_again(
        self, chat: ChatRequest, forward: Forward, clarification: str, record: ChatRecord
    ) -> str | None:
        """The upstream's second answer to an over-refused request, or None if it failed."""
        retry = dataclasses.replace(chat, body=with_system_message(chat.body, clarification))
        try:
            async with forward(retry, record.request_id) as reply:
                if not 200 <= reply.status < 300:
                    return None
                body = b"".join([chunk async for chunk in reply.aiter_bytes()])
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(kind=upstream_kind(exc)).inc()
            return None
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            return None
        return reply_text(payload) if isinstance(payload, dict) else None

    def note_verdict(self, record: ChatRecord, judged: ReplyVerdict) -> None:
        record.reply_verdict = judged
        record.decision = stronger(record.decision or Action.ALLOW, judged.action)
        record.would = stronger(record.would or Action.ALLOW, judged.would)

    def decision_headers(self, record: ChatRecord) -> Headers:
        would = record.would if record.mode is Mode.OBSERVE else None
        return decision_headers(record.request_id, record.decision or Action.ALLOW, would)

    async def _fail(self, exc: Exception, responder: Responder, record: ChatRecord) -> None:
        if isinstance(exc, UpstreamError):
            record.error = upstream_kind(exc)
            self.metrics.upstream_errors.labels(kind=record.error).inc()
            log.warning("upstream_failed", kind=record.error, cause=type(exc.__cause__).__name__)
        elif isinstance(exc, RequestError):
            record.error = exc.code
        else:
            record.error = "internal"
            log.exception("request_failed", error_type=type(exc).__name__)
        if not responder.started:
            await responder.error(exc, [(b"x-request-id", record.request_id.encode())])
        elif not responder.finished:
            # Headers are gone; end the stream with an error event the SDKs raise.
            code = getattr(exc, "code", None) or "internal_error"
            await responder.end(stream_error_event("The reply stream was interrupted.", code))
