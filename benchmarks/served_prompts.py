"""The single-turn eval sets as the guard decides them: the engine with the shipped policies.

    python3 -m benchmarks.served_prompts --data /work/shared/datasets \
        --out benchmarks/results/served_prompts.json --readme benchmarks/README.md

The model card thresholds the model's raw risk at its two tuned points.  The guard
decides otherwise: each category's policy thresholds (policies/*.yaml, on the calibrated
scale; stricter than the model's points for some categories, looser for others), the
conversation memory in front (each prompt a new conversation's first request) and the
cascade as served.  This is what the default install does with these prompts in enforce
mode: "caught" = flagged or blocked, "blocked" = answered by the guard, never forwarded.
Nothing here is tuned on eval/; the policies were written before this was measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.multiturn_eval import make_scorer, quiet_logs
from benchmarks.multiturn_through import EnginePass, offline_policies
from benchmarks.readme_block import load_result, update_block
from guard.conversation import Conversation, Message
from guard.decisions import Action, GuardRequest
from guard.memory import ConversationMemory
from guard.memory.identity import Keyring
from guard.memory.memory_store import MemoryStore
from guard.settings import SHIPPED_POLICY_DIR
from guard.training.eval_sets import prompt_sets
from guard.training.evaluate import Binary

CONCURRENCY = 16  # the scorer micro-batches concurrent requests, as under load


async def decide(through: EnginePass, texts: list[str], tag: str) -> list[Action]:
    """Each text as its own conversation's first request; the action enforce mode takes."""

    async def one(index: int) -> Action:
        request = GuardRequest(
            request_id=f"{tag}-{index}",
            conversation=Conversation((Message("user", texts[index]),)),
            tenant="served-eval",
            conversation_id=f"{tag}-{index}",
        )
        return (await through.engine.check_request(request)).action

    actions: list[Action] = []
    for start in range(0, len(texts), CONCURRENCY):
        indices = range(start, min(start + CONCURRENCY, len(texts)))
        actions += await asyncio.gather(*(one(i) for i in indices))
    return actions


async def run(data: Path, model_dir: Path) -> dict[str, Any]:
    scorer = make_scorer("onnx", model_dir)
    store = MemoryStore(ttl_s=86_400, max_conversations=1_000_000, max_bytes=1 << 31)
    memory = ConversationMemory(scorer, store, Keyring(b"served-eval-key-0123456789abcd"))
    through = EnginePass(scorer, memory, offline_policies(SHIPPED_POLICY_DIR))
    results: dict[str, Any] = {}
    try:
        for name, (texts, labels) in prompt_sets(data / "eval").items():
            began = time.perf_counter()
            actions = await decide(through, texts, name)
            truth = np.asarray(labels, dtype=bool)
            caught = np.array([a in (Action.FLAG, Action.BLOCK) for a in actions])
            blocked = np.array([a is Action.BLOCK for a in actions])
            results[name] = {
                "n": len(texts),
                "caught": Binary.of(truth, caught).summary(),
                "blocked": Binary.of(truth, blocked).summary(),
                "seconds": round(time.perf_counter() - began, 1),
            }
            print(f"{name}: {results[name]}", flush=True)
    finally:
        await scorer.aclose()
    return results


def _rate(value: float) -> str:
    return f"{100 * value:.1f}%"


def render(served: dict[str, Any], evaluation: dict[str, Any] | None) -> str:
    """The served table, beside the model card's raw-threshold figures where known."""
    card = (evaluation or {}).get("cascade", {})
    lines = [
        "Command: `python3 -m benchmarks.served_prompts --data ../shared/datasets "
        "--out benchmarks/results/served_prompts.json --readme benchmarks/README.md` "
        f"(model `{served['model_version']}`, policies `{served['policy_version'][:12]}`).",
        "",
        "| set | n | caught: recall | caught: FPR | caught: F1 | blocked: recall "
        "| blocked: FPR | model card @flag: recall / FPR |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, row in served["sets"].items():
        caught, blocked = row["caught"], row["blocked"]
        harmful = caught["tp"] + caught["fn"] > 0
        benign = caught["fp"] + caught["tn"] > 0

        def recall(counts: dict[str, Any], harmful: bool = harmful) -> str:
            return f"{counts['recall']:.3f}" if harmful else "-"

        def fpr(counts: dict[str, Any], benign: bool = benign) -> str:
            return _rate(counts["fpr"]) if benign else "-"

        at_flag = card.get(name, {}).get("at_flag")
        reference = f"{recall(at_flag)} / {fpr(at_flag)}" if at_flag else "-"
        f1 = f"{caught['f1']:.3f}" if harmful else "-"
        lines.append(
            f"| {name} | {row['n']} | {recall(caught)} | {fpr(caught)} | {f1} "
            f"| {recall(blocked)} | {fpr(blocked)} | {reference} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="datasets folder (holds eval/)")
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/served_prompts.json"))
    parser.add_argument("--readme", type=Path, help="rewrite the served block of this file")
    parser.add_argument(
        "--render-only", action="store_true", help="re-render --out into --readme, no run"
    )
    args = parser.parse_args(argv)
    quiet_logs()
    if not args.render_only:
        from guard.classifier.labels import load_labels
        from guard.policy.loader import load_policies

        sets = asyncio.run(run(args.data, args.model_dir))
        served = {
            "model_version": load_labels(args.model_dir).model_version,
            "policy_version": load_policies(SHIPPED_POLICY_DIR).version,
            "sets": sets,
        }
        args.out.write_text(json.dumps(served, indent=2) + "\n", encoding="utf-8")
    served = json.loads(args.out.read_text(encoding="utf-8"))
    text = render(served, load_result(args.model_dir / "evaluation.json"))
    print(text)
    if args.readme:
        update_block(args.readme, "served", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
