"""Tune the escalation weights and the flag threshold on train/multiturn (never eval/).

Replays the train split once per configuration of a small grid (texts are scored once
and shared across configurations), and for each reports the lowest flag threshold at
which no benign train set has more than ``--max-benign`` of its conversations flagged,
with the share of attacks caught there (the rule of benchmarks/multiturn_eval.py).

    python3 -m benchmarks.multiturn_tune --data ../shared/datasets --limit 150
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.multiturn_eval import dialogues_of, make_scorer, replay_all, score, thresholds
from guard.memory.escalation import EscalationConfig
from guard.scoring import HarmScore, ReplyInput, ReplyScore, Scorer


class SharedScores:
    """Scores each distinct text once across every configuration of the grid."""

    def __init__(self, scorer: Scorer) -> None:
        self._scorer = scorer
        self._scores: dict[str, HarmScore] = {}

    async def score_prompts(self, texts: Sequence[str]) -> list[HarmScore]:
        new = [t for t in dict.fromkeys(texts) if t not in self._scores]
        if new:
            for text, result in zip(new, await self._scorer.score_prompts(new), strict=True):
                self._scores[text] = result
        return [self._scores[t] for t in texts]

    async def score_replies(self, replies: Sequence[ReplyInput]) -> list[ReplyScore]:
        return await self._scorer.score_replies(replies)

    async def aclose(self) -> None:
        await self._scorer.aclose()


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


async def tune(args: argparse.Namespace) -> None:
    args.split = "train"
    dialogues = dialogues_of(args)
    _, block = thresholds(args.model_dir, None, args.block_threshold)
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
    parser.add_argument("--block-threshold", type=float, default=None)
    parser.add_argument("--limit", type=int, default=0, help="N of each train set, evenly spaced")
    parser.add_argument("--max-benign", type=float, default=0.02)
    parser.add_argument("--min-turn-words", default="0,8")
    parser.add_argument("--joint-weight", default="0,0.5,1")
    parser.add_argument("--peak-decay", default="0.6,0.8")
    parser.add_argument("--trend-weight", default="0,1")
    # (the joint window's length is a cost choice: benchmarks/memory_cost.py --joint-chars)
    asyncio.run(tune(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
