"""What one chat exchange did: the record the relay fills in as it goes, and the metrics
and the one ``request_completed`` log line it leaves when it ends."""

from __future__ import annotations

from dataclasses import dataclass

from guard.decisions import Action, Mode, ReplyVerdict, RequestVerdict
from guard.http_edge import Responder
from guard.logs import get_logger
from guard.metrics import GuardMetrics

log = get_logger("guard.relay")


@dataclass(slots=True)
class ChatRecord:
    """What one request did, for its log line and metrics (filled in as it goes)."""

    request_id: str
    mode: Mode | None = None
    verdict: RequestVerdict | None = None
    reply_verdict: ReplyVerdict | None = None
    decision: Action | None = None
    would: Action | None = None
    stream: bool = False
    request_bytes: int = 0
    upstream_s: float | None = None
    request_overhead_s: float = 0.0
    reply_overhead_s: float = 0.0
    error: str | None = None
    prompt: str | None = None  # only kept when logging.include_content is on


def account(
    record: ChatRecord, responder: Responder, duration: float, metrics: GuardMetrics
) -> None:
    """Count one finished exchange and write its ``request_completed`` line (no content
    unless ``logging.include_content`` put the prompt on the record)."""
    status = responder.status or 499  # nothing sent: the client went away
    metrics.requests.labels(route="chat", status=f"{status // 100}xx").inc()
    metrics.request_duration.labels(route="chat").observe(duration)
    if record.verdict is not None:
        mode = record.verdict.mode.value
        metrics.decisions.labels("request", record.verdict.action.value, mode).inc()
        metrics.would_decisions.labels("request", record.verdict.would.value).inc()
        metrics.guard_overhead.labels(direction="request").observe(record.request_overhead_s)
    if record.reply_verdict is not None:
        judged = record.reply_verdict
        metrics.decisions.labels("reply", judged.action.value, judged.mode.value).inc()
        metrics.would_decisions.labels("reply", judged.would.value).inc()
        metrics.guard_overhead.labels(direction="reply").observe(record.reply_overhead_s)
    verdict = record.verdict
    fields: dict[str, object] = {}
    if record.prompt is not None:
        fields["prompt"] = record.prompt
    judgement = verdict.judgement if verdict else None
    if judgement is not None:  # keyed hashes, never the raw id or API key
        fields |= {
            "conversation": judgement.conversation[:16],
            "tenant": judgement.tenant[:16],
            "turn": judgement.turn,
        }
    log.info(
        "request_completed",
        route="chat",
        status=status,
        decision=record.decision.value if record.decision else None,
        would=record.would.value if record.would else None,
        category=(record.reply_verdict.category if record.reply_verdict else None)
        or (verdict.category if verdict else None),
        risk=round(verdict.risk, 4) if verdict else None,
        refusal=record.reply_verdict.refusal.value if record.reply_verdict else None,
        stream=record.stream,
        duration_s=round(duration, 6),
        upstream_s=round(record.upstream_s, 6) if record.upstream_s is not None else None,
        overhead_s=round(record.request_overhead_s + record.reply_overhead_s, 6),
        request_bytes=record.request_bytes,
        response_bytes=responder.bytes_sent,
        error=record.error,
        **fields,
    )
