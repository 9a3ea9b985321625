"""Tune the cascade's two clear points together, on out-of-fold scores.

    python3 -m guard.training.cascade --data /work/shared/datasets --model models/

``guard.training.sieve`` and ``guard.training.early_exit`` each tune their stage's clear
point alone, to forward ``--recall`` of the harmful prompts the transformer flags.  As
served, a window is cleared only when both stages clear it, so the pair forwards more
than either alone, and the benign traffic that the slack sends to the tail costs the full
transformer for nothing (:mod:`guard.training.clear_points`).  This command picks both
points at once, for the cascade as a whole:

1. ``--folds`` sieves and exit heads are trained as the shipped ones were, each without
   the fold it then scores, so every training prompt gets both stages' scores from
   stages that never saw it (the sieve's own tuning used the dev split alone: a few
   hundred harmful prompts, so its point rested on its two or three lowest scores);
2. the dev split is scored by the shipped stages;
3. :func:`~guard.training.clear_points.joint_clear_points` picks the pair that clears the
   most benign prompts of at most 64 tokens while clearing no more of the harmful prompts
   the transformer flags than the shipped pair clears on the same texts (those longer than
   64 tokens always go on): more benign traffic spared at the same measured cost.  With
   ``--recall R`` the allowance is instead ``1 - R`` of those prompts.

The shipped stages are not retrained: only ``clear_below`` (and the tuning record) of
``sieve.json`` and ``exit.json`` change, and each file's old point is kept in its record.
The fold models approximate the shipped stages on unseen text; the eval run
(``guard.training.evaluate --only cascade``) measures the result as served.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from guard.classifier.encoding import Window
from guard.classifier.predictor import Predictor
from guard.classifier.session import load_exit, load_model, load_sieve, open_session
from guard.classifier.sieve import (
    EXIT_LABELS_FILE,
    MAX_CLEARABLE_TOKENS,
    SIEVE_LABELS_FILE,
    Sieve,
    SieveLabels,
    load_sieve_labels,
)
from guard.training import data as data_mod
from guard.training import early_exit, sieve
from guard.training.clear_points import (
    JointPoints,
    allowed_misses,
    cleared_by,
    joint_clear_points,
)
from guard.training.data import Example

# The tuning record's entries that described a point tuned alone: replaced, not kept.
_POINT_KEYS = (
    "dev_model_caught_forwarded",
    "dev_harmful_forwarded",
    "dev_benign_cleared",
    "oof_model_caught_forwarded",
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return result


@dataclass(frozen=True, slots=True)
class Folds:
    """The training texts as the stages see them, the teacher's view, and each one's fold."""

    examples: list[Example]
    windows: list[Window]  # each example's first window
    soft: np.ndarray  # the transformer's probabilities for those windows
    fold_of: np.ndarray


def oof_sieve(args: argparse.Namespace, folds: Folds, predictor: Predictor) -> np.ndarray:
    """Each example's sieve risk from a sieve trained without its fold (int8, as served)."""
    encoder = predictor.model.encoder
    vectors = sieve.distilled_vectors(args.dim)
    risk = np.zeros(len(folds.examples), dtype=np.float32)
    for fold in range(args.folds):
        inside = np.flatnonzero(folds.fold_of != fold)
        chosen = [folds.examples[i] for i in inside]
        model = sieve.train_sieve(args, encoder, chosen, folds.soft[inside], vectors)
        work = args.work / f"fold{fold}"
        sieve.export(model, work / "sieve.fp32.onnx", work / "sieve.onnx")
        session = open_session(work / "sieve.onnx", "cpu", args.threads, outputs=("harm",))
        labels = SieveLabels(model_sha256="out-of-fold", dim=args.dim, clear_below=0.0)
        stage = Sieve(session, labels, work / "sieve.onnx")
        outside = np.flatnonzero(folds.fold_of == fold)
        for start in range(0, len(outside), 256):
            rows = outside[start : start + 256]
            windows = [folds.windows[i] for i in rows]
            risk[rows] = stage.window_probabilities(windows, encoder)[:, 0]
    return risk


def oof_exit(args: argparse.Namespace, folds: Folds, predictor: Predictor) -> np.ndarray:
    """Each example's early-exit risk from a head trained without its fold."""
    pooled = early_exit.pooled_states(predictor.model.session, predictor, folds.windows)
    target, mask = sieve._targets(folds.examples)
    soft = torch.from_numpy(folds.soft.astype(np.float32))
    risk = np.zeros(len(folds.examples), dtype=np.float32)
    for fold in tqdm(range(args.folds), desc="out-of-fold exit heads"):
        inside = np.flatnonzero(folds.fold_of != fold)
        head = early_exit.fit_head(
            pooled.whole[inside], target[inside], mask[inside], soft[inside], args.exit_epochs,
            fold,
        )  # fmt: skip
        outside = np.flatnonzero(folds.fold_of == fold)
        risk[outside] = early_exit._risk(head, pooled, outside)
    return risk


@dataclass(frozen=True, slots=True)
class Scores:
    """Both stages' risks for every tuning text, and which texts count how."""

    sieve: np.ndarray  # inf where a window is too long to be cleared
    exit: np.ndarray
    caught: np.ndarray  # harmful, and the transformer flags it
    benign: np.ndarray  # benign and short enough to be cleared

    def save(self, path: Path) -> None:
        np.savez(path, sieve=self.sieve, exit=self.exit, caught=self.caught, benign=self.benign)

    @classmethod
    def load(cls, path: Path) -> Scores:
        with np.load(path) as saved:
            return cls(saved["sieve"], saved["exit"], saved["caught"], saved["benign"])


def score(args: argparse.Namespace) -> Scores:
    """Out-of-fold scores for the training prompts, the shipped stages' for the dev split."""
    model = load_model(args.model, intra_op_threads=args.threads)
    if model.tail is None:
        raise SystemExit(f"{args.model} is not split: it has no early exit to tune")
    teacher = Predictor(model)
    shipped_sieve = load_sieve(args.model, intra_op_threads=args.threads)
    shipped_exit = load_exit(args.model, intra_op_threads=args.threads)
    train_examples, dev_examples = data_mod.load(args.data, seed=args.seed)
    dev = [e for e in dev_examples if not e.is_reply]
    examples = [e for e in train_examples if not e.is_reply] + [
        Example(text=t, source="unlabelled") for t in sieve.unlabelled_texts(args.data / "train")
    ]
    encoder = model.encoder
    windows = [w[0] for w in encoder.text_windows([e.text for e in examples], first_only=True)]
    dev_windows = [w[0] for w in encoder.text_windows([e.text for e in dev], first_only=True)]
    soft = _sigmoid(teacher.run(windows).harm).astype(np.float32)
    folds = Folds(
        examples, windows, soft, early_exit.fold_assignment(len(examples), args.folds, args.seed)
    )
    exit_risk = oof_exit(args, folds, teacher)
    sieve_risk = oof_sieve(args, folds, teacher)
    dev_exit = np.zeros(len(dev_windows), dtype=np.float32)
    for row, window in enumerate(dev_windows):  # one at a time, as a lone turn is served
        batch = encoder.batch([window])
        hidden = teacher._front(batch)[0]
        dev_exit[row] = shipped_exit.hidden_probabilities(hidden, batch.attention_mask)[0, 0]
    dev_sieve = shipped_sieve.window_probabilities(dev_windows, encoder)[:, 0]
    dev_teacher = teacher.harm_probabilities([e.text for e in dev])[:, 0]

    flag = model.labels.thresholds.flag
    labelled = np.array([e.harmful is not None for e in examples])
    harmful = np.array([bool(e.harmful) for e in examples])
    dev_harmful = np.array([bool(e.harmful) for e in dev])
    lengths = np.array([len(w.ids) - 2 for w in [*windows, *dev_windows]])
    short = lengths <= MAX_CLEARABLE_TOKENS
    # A window too long to clear always goes on: it never counts as cleared.
    return Scores(
        sieve=np.where(short, np.concatenate([sieve_risk, dev_sieve]), np.inf),
        exit=np.where(short, np.concatenate([exit_risk, dev_exit]), np.inf),
        caught=np.concatenate(
            [labelled & harmful & (soft[:, 0] >= flag), dev_harmful & (dev_teacher >= flag)]
        ),
        benign=np.concatenate([labelled & ~harmful, ~dev_harmful]) & short,
    )


def _record(old: SieveLabels, point: float, points: JointPoints, folds: int) -> dict[str, Any]:
    tuning = {k: v for k, v in old.tuning.items() if k not in _POINT_KEYS}
    tuning.update(
        {
            "alone_clear_below": tuning.get("alone_clear_below", old.clear_below),
            "joint_folds": float(folds),
            "joint_model_caught": float(points.harmful),
            "joint_model_caught_cleared": float(points.harmful_cleared),
            "joint_benign_short": float(points.benign),
            "joint_benign_short_cleared": round(points.benign_cleared_share, 4),
        }
    )
    return {**old.model_dump(exclude_none=True), "clear_below": point, "tuning": tuning}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="datasets folder (holds train/)")
    parser.add_argument("--model", type=Path, default=Path("models"), help="shipped model dir")
    parser.add_argument("--work", type=Path, default=Path("runs/cascade"))
    parser.add_argument(
        "--recall",
        type=float,
        default=None,
        help="forward this share of the transformer's catches (default: clear none more "
        "than the shipped points do)",
    )
    parser.add_argument(
        "--scores", type=Path, default=None, help="tune on a saved WORK/scores.npz (no training)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the points, write nothing")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=13)
    # As guard.training.sieve and early_exit train the shipped stages.
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=12, help="sieve epochs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--distil", type=float, default=1.0)
    parser.add_argument("--exit-epochs", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if args.scores is not None:
        scores = Scores.load(args.scores)
    else:
        scores = score(args)
        scores.save(args.work / "scores.npz")

    old = (load_sieve_labels(args.model), load_sieve_labels(args.model, EXIT_LABELS_FILE))
    before = cleared_by(scores.sieve, scores.exit, old[0].clear_below, old[1].clear_below)
    misses = (
        int((before & scores.caught).sum())
        if args.recall is None
        else allowed_misses(int(scores.caught.sum()), args.recall)
    )
    points = joint_clear_points(scores.sieve, scores.exit, scores.caught, scores.benign, misses)
    report = {
        "alone": {"sieve": old[0].clear_below, "exit": old[1].clear_below,
                  "model_caught_cleared": int((before & scores.caught).sum()),
                  "benign_short_cleared": round(float(before[scores.benign].mean()), 4)},
        "joint": {"sieve": points.sieve, "exit": points.exit,
                  "model_caught_cleared": points.harmful_cleared,
                  "benign_short_cleared": round(points.benign_cleared_share, 4)},
        "model_caught": points.harmful, "benign_short": points.benign,
        "wall_s": round(time.monotonic() - started, 1),
    }  # fmt: skip
    print(json.dumps(report, indent=2), flush=True)
    if args.dry_run:
        return 0
    for name, labels, point in (
        (SIEVE_LABELS_FILE, old[0], points.sieve),
        (EXIT_LABELS_FILE, old[1], points.exit),
    ):
        record = _record(labels, point, points, args.folds)
        (args.model / name).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
