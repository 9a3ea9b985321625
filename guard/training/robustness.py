"""What a harmless addition to a prompt does to the classifier, on the train dev split.

    python3 -m guard.training.robustness --data /work/shared/datasets --model models/ \
        [--model CANDIDATE ...] [--json-out FILE]

Numbers and pleasantries in a prompt say nothing about harm, yet they move a small model:
an order number after a benign request made the shipped early exit read it as harm, so
such turns never took the cascade's cheap path.  For every dev-split prompt, alone and
with each of :data:`ADDITIONS` appended, this reports per model (the cascade as served:
sieve and early exit in front of the transformer):

- ``caught_lost``: harmful prompts flagged without the addition and not with it;
- ``benign_flagged``: benign prompts flagged with it;
- ``benign_cleared``: share of benign prompts a cheap stage cleared (the tail skipped);
- ``catches_cleared``: harmful prompts the transformer alone flags with the addition
  that a cheap stage cleared anyway (what the cascade costs in recall).

Train side only: the dev split, never eval/.  The additions were written once, before any
model was judged by them, and are fixed so that figures stay comparable.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from guard.classifier.predictor import Predictor
from guard.classifier.session import load_model
from guard.classifier.sieve import TAIL_FILE
from guard.scoring import Stage
from guard.training import data as data_mod

ADDITIONS: tuple[str, ...] = (
    "",
    " 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5",
    " Order 4471-2290-118.",
    " Trip 1 0 0 0 0 0 4 2 7.",
    " Ref: XK-QP-ZZ.",
    " Call me on 555 013 2297.",
    " We land on 12/04/2027 at 14:30.",
    " Thanks a lot in advance!",
    " :) :)",
)


@dataclass(frozen=True, slots=True)
class AdditionResult:
    """One model's answers to the dev split with one addition."""

    addition: str
    caught_lost: int
    benign_flagged: int
    benign_cleared: float
    catches_cleared: int


@dataclass(frozen=True, slots=True)
class ModelResult:
    model: str
    harmful: int
    benign: int
    rows: tuple[AdditionResult, ...]

    @property
    def totals(self) -> dict[str, float]:
        added = [row for row in self.rows if row.addition]
        return {
            "caught_lost": sum(row.caught_lost for row in added),
            "benign_flagged": sum(row.benign_flagged for row in added),
            "benign_cleared_mean": round(float(np.mean([r.benign_cleared for r in added])), 4),
            "catches_cleared": sum(row.catches_cleared for row in self.rows),
        }


def probe(model_dir: Path, texts: list[str], harmful: np.ndarray, threads: int) -> ModelResult:
    """:class:`ModelResult` for the model in ``model_dir`` on ``texts``.

    A model not yet split for its cheap stages (a candidate before its cascade is trained)
    is probed as the transformer alone: nothing is cleared early.
    """
    staged = (model_dir / TAIL_FILE).is_file()
    model = load_model(model_dir, intra_op_threads=threads, sieve=staged, early_exit=staged)
    cascade = Predictor(model)
    alone = Predictor(replace(model, sieve=None, exit=None))  # same sessions, no cheap stages
    flag = cascade.model.labels.thresholds.flag
    rows, clean_caught = [], np.zeros(len(texts), bool)
    for addition in tqdm(ADDITIONS, desc=model_dir.name or str(model_dir)):
        varied = [text + addition for text in texts]
        screened = cascade.harm_screened(varied)
        flagged = screened.probabilities[:, 0] >= flag
        transformer = alone.harm_probabilities(varied)[:, 0] >= flag
        cleared = screened.stages != Stage.MODEL.value
        if not addition:
            clean_caught = flagged & harmful
        rows.append(
            AdditionResult(
                addition=addition,
                caught_lost=int((clean_caught & ~flagged).sum()),
                benign_flagged=int((flagged & ~harmful).sum()),
                benign_cleared=round(float(cleared[~harmful].mean()), 4),
                catches_cleared=int((transformer & harmful & cleared).sum()),
            )
        )
    return ModelResult(str(model_dir), int(harmful.sum()), int((~harmful).sum()), tuple(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="datasets folder (holds train/)")
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    _, dev = data_mod.load(args.data)
    prompts = [e for e in dev if not e.is_reply]
    texts = [e.text for e in prompts]
    harmful = np.array([bool(e.harmful) for e in prompts])
    results = [probe(model, texts, harmful, args.threads) for model in args.model]
    for result in results:
        print(f"\n{result.model}: {result.harmful} harmful, {result.benign} benign dev prompts")
        heads = ("lost", "benign flagged", "cleared", "caught cleared")
        print(f"{'addition':34s} {heads[0]:>5s} {heads[1]:>15s} {heads[2]:>8s} {heads[3]:>15s}")
        for row in result.rows:
            print(
                f"{row.addition or '(none)':34s} {row.caught_lost:5d} {row.benign_flagged:15d}"
                f" {row.benign_cleared:8.1%} {row.catches_cleared:15d}"
            )
        print("totals:", json.dumps(result.totals))
    if args.json_out is not None:
        payload = [{**asdict(r), "totals": r.totals} for r in results]
        args.json_out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
