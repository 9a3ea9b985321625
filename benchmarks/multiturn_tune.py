"""Tune multi-turn settings on train/multiturn (never eval/).

Replays the train split once per configuration of a small grid (texts and replies are
scored once and shared across configurations), with the rule of
benchmarks/multiturn_eval.py.

* ``--through engine`` (the default): the policy knobs.  Every combination of
  ``escalation.flag``, ``escalation.block``, ``escalation.split_intent`` and
  ``escalation.fragments`` is applied
  to a copy of ``--policies`` and the conversations go through the engine; each row
  gives what the guard decides (attacks caught, benign flagged and blocked per set,
  which reasons fired on benign conversations).
* ``--through memory``: the escalation weights; for each, the lowest conversation-risk
  flag threshold at which no benign train set has more than ``--max-benign`` of its
  conversations flagged, with the share of attacks caught there.

    python3 -m benchmarks.multiturn_tune --data ../shared/datasets --limit 150
    python3 -m benchmarks.multiturn_tune --data ../shared/datasets --through memory
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.multiturn_eval import (
    dialogues_of,
    make_scorer,
    quiet_logs,
    replay_all,
    thresholds,
)
from benchmarks.multiturn_report import Trace, score
from benchmarks.multiturn_through import offline_policies, with_escalation
from guard.memory.escalation import EscalationConfig
from guard.scoring import HarmScore, ReplyInput, ReplyScore, Scorer
from guard.settings import SHIPPED_POLICY_DIR


class SharedScores:
    """Scores each distinct text once across every configuration of the grid."""

    def __init__(self, scorer: Scorer) -> None:
        self._scorer = scorer
        self._scores: dict[str, HarmScore] = {}
        self._replies: dict[ReplyInput, ReplyScore] = {}

    async def score_prompts(self, texts: Sequence[str]) -> list[HarmScore]:
        new = [t for t in dict.fromkeys(texts) if t not in self._scores]
        if new:
            for text, result in zip(new, await self._scorer.score_prompts(new), strict=True):
                self._scores[text] = result
        return [self._scores[t] for t in texts]

    async def score_replies(self, replies: Sequence[ReplyInput]) -> list[ReplyScore]:
        new = [r for r in dict.fromkeys(replies) if r not in self._replies]
        if new:
            for reply, result in zip(new, await self._scorer.score_replies(new), strict=True):
                self._replies[reply] = result
        return [self._replies[r] for r in replies]

    async def aclose(self) -> None:
        await self._scorer.aclose()


# Reasons the conversation memory gives beyond the last turn's own score.
CONVERSATION_REASONS = ("split_intent", "escalation", "repeated_after_blocks")


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


async def tune_policy(args: argparse.Namespace) -> None:
    args.split = "train"
    dialogues = dialogues_of(args)
    flag_point, block = thresholds(None, args.block_threshold)
    shared = SharedScores(make_scorer(args.scorer, args.model_dir))
    base = offline_policies(args.policies)
    print(f"train dialogues: {len(dialogues)}; clearly harmful >= {block:.3f}\n")
    print("| fragments | split_intent | escalation.flag | escalation.block | attacks caught "
          "| of which first flagged by a conversation-level reason "
          "| benign flagged per set | worst | benign blocked (worst set) "
          "| benign with a conversation-level reason "
          "| reasons on benign (share of all benign) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    try:
        grid = itertools.product(
            args.fragments.split(","), args.split_intent.split(","),
            _floats(args.escalation_flag), _floats(args.escalation_block),
        )  # fmt: skip
        for fragments, split_intent, flag, esc_block in grid:
            if esc_block < flag:
                continue
            policies = with_escalation(
                base, flag=flag, block=esc_block, split_intent=split_intent, fragments=fragments
            )
            attacks, benign = await replay_all(
                dialogues, shared, EscalationConfig(), seed=7, modes=("explicit",),
                policies=policies,
            )  # fmt: skip
            result = score(attacks, benign, flag_point, block)
            per_set = ", ".join(f"{100 * v:.1f}" for v in result.benign_flagged.values())
            by_conversation = sum(
                any(r in CONVERSATION_REASONS for rs in t.reasons for r in rs) for t in benign
            ) / max(len(benign), 1)
            attack_share = sum(
                any(r in CONVERSATION_REASONS for r in _first_reasons(t)) for t in attacks
            ) / max(len(attacks), 1)
            print(
                f"| {fragments} | {split_intent} | {flag} | {esc_block} "
                f"| {100 * result.attack_caught:.1f}% "
                f"| {100 * attack_share:.1f}% "
                f"| {per_set} | {100 * max(result.benign_flagged.values()):.1f}% "
                f"| {100 * max(result.benign_blocked.values()):.1f}% "
                f"| {100 * by_conversation:.1f}% | {_reasons(benign)} |",
                flush=True,
            )
    finally:
        await shared.aclose()


def _first_reasons(trace: Trace) -> tuple[str, ...]:
    return next((rs for rs, flagged in zip(trace.reasons, trace.flags, strict=True) if flagged), ())


def _reasons(benign: Sequence[Trace]) -> str:
    counts: dict[str, int] = {}
    for trace in benign:
        for reason in {r for reasons in trace.reasons for r in reasons}:
            counts[reason] = counts.get(reason, 0) + 1
    total = max(len(benign), 1)
    return ", ".join(f"{r} {100 * c / total:.1f}%" for r, c in sorted(counts.items()))


async def tune(args: argparse.Namespace) -> None:
    args.split = "train"
    dialogues = dialogues_of(args)
    _, block = thresholds(None, args.block_threshold)
    shared = SharedScores(make_scorer(args.scorer, args.model_dir))
    print(f"train dialogues: {len(dialogues)}; block threshold {block:.3f}\n")
    print("| min_turn_words | joint_weight | peak_decay | trend_weight | flag threshold "
          "| attacks caught | worst benign set | per-turn alone caught |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    try:
        grid = itertools.product(
            [int(v) for v in _floats(args.min_turn_words)],
            _floats(args.joint_weight),
            _floats(args.peak_decay),
            _floats(args.trend_weight),
        )
        for words, joint_weight, decay, trend in grid:
            config = EscalationConfig(
                min_turn_words=words,
                joint_weight=joint_weight,
                peak_decay=decay,
                trend_weight=trend,
            )
            row = f"| {words} | {joint_weight} | {decay} | {trend} |"
            attacks, benign = await replay_all(
                dialogues, shared, config, seed=7, modes=("explicit",)
            )
            chosen = None
            for step in range(10, 100):
                result = score(attacks, benign, step / 100, block)
                if max(result.benign_flagged.values(), default=0.0) <= args.max_benign:
                    chosen = result
                    break
            if chosen is None:
                print(f"{row} none | | | |")
                continue
            worst = max(chosen.benign_flagged.values(), default=0.0)
            print(
                f"{row} {chosen.flag_threshold:.2f} | "
                f"{100 * chosen.attack_caught:.1f}% | {100 * worst:.1f}% | "
                f"{100 * chosen.attack_caught_single:.1f}% |",
                flush=True,
            )
    finally:
        await shared.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--scorer", choices=("onnx", "keyword"), default="onnx")
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--through", choices=("engine", "memory"), default="engine")
    parser.add_argument("--policies", type=Path, default=SHIPPED_POLICY_DIR)
    parser.add_argument("--split-intent", default="joint,memory", help="engine grid")
    parser.add_argument("--fragments", default="alone,in_context", help="engine grid")
    parser.add_argument(
        "--escalation-flag", default="0.5,0.6,0.7,0.8,0.85,0.9,0.92,0.95", help="engine grid"
    )
    parser.add_argument("--escalation-block", default="0.95", help="engine grid")
    parser.add_argument("--block-threshold", type=float, default=None)
    parser.add_argument("--limit", type=int, default=0, help="N of each train set, evenly spaced")
    parser.add_argument("--max-benign", type=float, default=0.02)
    parser.add_argument("--min-turn-words", default="0,8")
    parser.add_argument("--joint-weight", default="0,0.5,1")
    parser.add_argument("--peak-decay", default="0.6,0.8")
    parser.add_argument("--trend-weight", default="0,1")
    # (the joint window's length is a cost choice: benchmarks/memory_cost.py --joint-chars)
    args = parser.parse_args(argv)
    quiet_logs()
    asyncio.run(tune_policy(args) if args.through == "engine" else tune(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
