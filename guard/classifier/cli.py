"""``guard score [FILE|-]``: score JSON lines with the shipped classifier.

Each input line is ``{"text": ...}`` or ``{"messages": [...]}`` (OpenAI chat format).
Each output line holds ``risk``, ``category``, ``categories`` and ``decision`` (under
the label map's default thresholds) for the user side - the text, or the last user
message - and, when the last message is from the assistant, ``refusal`` for that reply.
A line that cannot be used yields ``{"line": n, "error": ...}`` and the run goes on;
the exit status is non-zero only when reading or writing fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from guard.classifier.labels import Labels
from guard.classifier.predictor import Predictor
from guard.classifier.session import load_model
from guard.conversation import ROLES, message_text
from guard.errors import GuardError
from guard.scoring import ReplyInput
from guard.settings import SHIPPED_MODEL_DIR

CHUNK_LINES = 64


@dataclass(frozen=True, slots=True)
class ScoreItem:
    """One usable input line: the user-side text and, optionally, a reply to type."""

    line: int
    text: str
    reply: str | None = None


class BadLine(ValueError):
    """An input line that is not a usable scoring request."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", default="-", help="JSON lines file, or - for stdin")
    parser.add_argument("--model-dir", type=Path, default=SHIPPED_MODEL_DIR)
    parser.add_argument("--provider", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")


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
    users = [text for role, text in parsed if role == "user"]
    if not users:
        raise BadLine("'messages' has no user message")
    if parsed[-1][0] == "assistant":
        prompt_index = max(i for i, (role, _) in enumerate(parsed) if role == "user")
        return ScoreItem(number, parsed[prompt_index][1], reply=parsed[-1][1])
    return ScoreItem(number, users[-1])


def _records(
    items: Sequence[ScoreItem], predictor: Predictor, labels: Labels
) -> Iterator[dict[str, Any]]:
    harm = predictor.score_prompts([item.text for item in items])
    with_reply = [item for item in items if item.reply is not None]
    replies = predictor.score_replies([ReplyInput(i.text, i.reply or "") for i in with_reply])
    reply_by_line = {item.line: score for item, score in zip(with_reply, replies, strict=True)}
    for item, score in zip(items, harm, strict=True):
        record: dict[str, Any] = {
            "line": item.line,
            "risk": round(score.risk, 4),
            "category": score.category,
            "categories": {name: round(p, 4) for name, p in score.categories.items()},
            "decision": labels.decision(score.risk),
        }
        if item.line in reply_by_line:
            record["refusal"] = reply_by_line[item.line].refusal.value
        yield record


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
        model = load_model(args.model_dir, provider=args.provider, intra_op_threads=args.threads)
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
