"""``guard score [FILE|-]``: score JSON lines with the shipped classifier.

Each input line is ``{"text": ...}`` or ``{"messages": [...]}`` (OpenAI chat format).
Each output line holds ``risk``, ``category``, ``categories`` and ``decision`` (under
the label map's default thresholds) and ``stage`` (which cascade stage decided: sieve,
exit or model; ``--no-cascade`` sends everything through the whole transformer) for the
user side - the text, or the last user message - and, when the last message is from
the assistant, ``refusal`` for that reply.
With more than one user turn, ``conversation`` holds the conversation-level judgement
of the last one (risk, joint risk, trend, decision and reasons under the shipped
policies), reached by replaying the history through the conversation memory.
A line that cannot be used yields ``{"line": n, "error": ...}`` and the run goes on;
the exit status is non-zero only when reading or writing fails.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from guard.classifier.labels import Labels
from guard.classifier.predictor import Predictor
from guard.classifier.session import load_model
from guard.conversation import ROLES, Message, message_text
from guard.errors import GuardError
from guard.memory import ConversationJudgement, ConversationMemory
from guard.memory.replay import replay
from guard.policy.decide import category_of, request_decision, thresholds_for
from guard.policy.loader import PolicySet, load_policies
from guard.scoring import HarmScore, ReplyInput, ReplyScore
from guard.settings import SHIPPED_MODEL_DIR, SHIPPED_POLICY_DIR, MemorySettings

CHUNK_LINES = 64


@dataclass(frozen=True, slots=True)
class ScoreItem:
    """One usable input line: the user-side text and, optionally, a reply to type.

    ``history`` holds the messages up to the last user turn when there was more than one
    user turn: the conversation-level judgement of that turn is reported too.
    """

    line: int
    text: str
    reply: str | None = None
    history: tuple[Message, ...] = ()


class BadLine(ValueError):
    """An input line that is not a usable scoring request."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", default="-", help="JSON lines file, or - for stdin")
    parser.add_argument("--model-dir", type=Path, default=SHIPPED_MODEL_DIR)
    parser.add_argument("--provider", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument(
        "--no-cascade",
        action="store_true",
        help="skip the cheap stages (sieve, early exit): the whole transformer scores every text",
    )


def parse_line(number: int, line: str) -> ScoreItem:
    """A JSON line -> :class:`ScoreItem`; :class:`BadLine` says what is wrong."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadLine(f"not JSON: {exc.msg}") from exc
    if not isinstance(record, Mapping):
        raise BadLine("expected a JSON object")
    if "text" in record:
        if not isinstance(record["text"], str):
            raise BadLine("'text' must be a string")
        return ScoreItem(number, record["text"])
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadLine("expected 'text' or a non-empty 'messages' list")
    parsed: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in ROLES:
            raise BadLine(f"messages[{index}] needs a role in {sorted(ROLES)}")
        parsed.append((str(message["role"]), message_text(message)))
    users = [index for index, (role, _) in enumerate(parsed) if role == "user"]
    if not users:
        raise BadLine("'messages' has no user message")
    last_user = users[-1]
    history = (
        tuple(Message(role, text) for role, text in parsed[: last_user + 1])
        if len(users) > 1
        else ()
    )
    reply = parsed[-1][1] if parsed[-1][0] == "assistant" else None
    return ScoreItem(number, parsed[last_user][1], reply=reply, history=history)


def _records(
    items: Sequence[ScoreItem], predictor: Predictor, labels: Labels
) -> Iterator[dict[str, Any]]:
    harm = predictor.score_prompts([item.text for item in items])
    with_reply = [item for item in items if item.reply is not None]
    replies = predictor.score_replies([ReplyInput(i.text, i.reply or "") for i in with_reply])
    reply_by_line = {item.line: score for item, score in zip(with_reply, replies, strict=True)}
    judgement_by_line = _replay_histories([item for item in items if item.history], predictor)
    for item, score in zip(items, harm, strict=True):
        record: dict[str, Any] = {
            "line": item.line,
            "risk": round(score.risk, 4),
            "category": score.category,
            "categories": {name: round(p, 4) for name, p in score.categories.items()},
            "decision": labels.decision(score.risk),
            "stage": score.stage.value,
        }
        if item.line in reply_by_line:
            record["refusal"] = reply_by_line[item.line].refusal.value
        if item.line in judgement_by_line:
            record["conversation"] = conversation_record(judgement_by_line[item.line], score)
        yield record


class _PredictorScorer:
    """The :class:`guard.scoring.Scorer` protocol over a synchronous predictor (CLI only)."""

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor

    async def score_prompts(self, texts: Sequence[str]) -> list[HarmScore]:
        return self._predictor.score_prompts(texts)

    async def score_replies(self, replies: Sequence[ReplyInput]) -> list[ReplyScore]:
        return self._predictor.score_replies(replies)

    async def aclose(self) -> None:
        return None


def _replay_histories(
    items: Sequence[ScoreItem], predictor: Predictor
) -> dict[int, ConversationJudgement]:
    """Each item's history replayed through one in-memory conversation memory.

    Every line is its own conversation (``line-N``), as the live guard would see it turn
    by turn; one memory and one event loop serve the whole chunk.
    """
    if not items:
        return {}

    async def replay_all() -> dict[int, ConversationJudgement]:
        memory = ConversationMemory.from_settings(MemorySettings(), _PredictorScorer(predictor))
        try:
            return {
                item.line: await replay(memory, item.history, conversation_id=f"line-{item.line}")
                for item in items
            }
        finally:
            await memory.aclose()

    return asyncio.run(replay_all())


def conversation_record(judgement: ConversationJudgement, turn: HarmScore) -> dict[str, Any]:
    """The conversation-level judgement of the last user turn, as the live guard reaches it.

    ``decision`` is what the engine would decide for the request under the shipped
    policies (per-turn risk, split intent, escalation).
    """
    policies = _shipped_policies()
    category = category_of(judgement, turn)
    would, reasons = request_decision(
        policies, thresholds_for(policies, category), judgement.turn_score, judgement
    )
    return {
        "risk": round(judgement.risk, 4),
        "joint_risk": round(judgement.joint_score.risk, 4),
        "trend": round(judgement.trend, 4),
        "turns": judgement.turn,
        "category": category,
        "decision": would.value,
        "reasons": list(reasons),
    }


@functools.cache
def _shipped_policies() -> PolicySet:
    return load_policies(SHIPPED_POLICY_DIR)


def score_lines(lines: Iterable[str], predictor: Predictor, out: IO[str]) -> None:
    """Score ``lines`` in chunks, writing one JSON line per non-blank input line."""
    labels = predictor.model.labels
    pending: list[ScoreItem] = []
    results: dict[int, dict[str, Any]] = {}

    def flush() -> None:
        if pending:
            for record in _records(pending, predictor, labels):
                results[record["line"]] = record
            pending.clear()
        for number in sorted(results):
            out.write(json.dumps(results.pop(number), ensure_ascii=False) + "\n")
        out.flush()

    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            pending.append(parse_line(number, line))
        except BadLine as exc:
            results[number] = {"line": number, "error": str(exc)}
        if len(pending) >= CHUNK_LINES:
            flush()
    flush()


def run(args: argparse.Namespace) -> int:
    try:
        model = load_model(
            args.model_dir,
            provider=args.provider,
            intra_op_threads=args.threads,
            sieve=not args.no_cascade,
            early_exit=not args.no_cascade,
        )
    except GuardError as exc:
        print(f"guard score: {exc}", file=sys.stderr)
        return 2
    predictor = Predictor(model)
    try:
        if args.file == "-":
            score_lines(sys.stdin, predictor, sys.stdout)
        else:
            with open(args.file, encoding="utf-8") as handle:
                score_lines(handle, predictor, sys.stdout)
    except OSError as exc:
        print(f"guard score: cannot read or write: {exc}", file=sys.stderr)
        return 1
    except GuardError as exc:
        print(f"guard score: {exc}", file=sys.stderr)
        return 1
    return 0
