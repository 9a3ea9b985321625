"""Re-apply a threshold rule to a trained model without training it again.

    python3 -m guard.training.retune --data /work/shared/datasets --model runs/v3 [--write]
    python3 -m guard.training.retune --data /work/shared/datasets --model V11 --match models/
    python3 -m guard.training.retune --data /work/shared/datasets --model V12 --keep-recall models/

Rule 1 (the default) loads the model dir's ONNX model, rebuilds the dev split exactly as
training does (``data.load`` with the same seed) and runs
:func:`guard.training.thresholds.tune_thresholds`.  Rule 2 (``--match REFERENCE``) places
the points where the model flags and blocks as much of the alert pool
(:func:`guard.training.thresholds.alert_pool`) as the reference model does at its own
points (the transformers alone, no cheap stages).  Rule 3 (``--keep-recall REFERENCE``)
places them as high as they go while the model still catches the share of the dev split's
harmful prompts (``--exclude-source`` leaves out sources the model was trained without) that
the reference catches at its own points.  Prints the old and new thresholds and
figures; ``--write`` stores them in the model dir's labels.json (the model file and its
sha256 are untouched).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from guard.classifier.labels import LABELS_FILE
from guard.classifier.predictor import Predictor
from guard.classifier.session import load_model
from guard.training import data as data_mod
from guard.training.thresholds import (
    SharedThresholds,
    alert_pool,
    matched_thresholds,
    recall_kept_thresholds,
    tune_thresholds,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="datasets folder (holds train/)")
    parser.add_argument("--model", type=Path, required=True, help="model dir (guard.onnx, labels)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="store the result in labels.json")
    rules = parser.add_mutually_exclusive_group()
    rules.add_argument(
        "--match",
        type=Path,
        default=None,
        metavar="REFERENCE",
        help="rule 2: match this model dir's alert rates on the alert pool",
    )
    rules.add_argument(
        "--keep-recall",
        type=Path,
        default=None,
        metavar="REFERENCE",
        help="rule 3: keep this model dir's recall on the dev split's harmful prompts",
    )
    parser.add_argument(
        "--exclude-source",
        action="append",
        default=[],
        help="with --keep-recall: leave this source's dev prompts out (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.match is not None:
        flag, block, stats = _matched(args)
    elif args.keep_recall is not None:
        flag, block, stats = _recall_kept(args)
    else:
        _, dev = data_mod.load(args.data, seed=args.seed)
        predictor = Predictor(load_model(args.model, intra_op_threads=args.threads))
        flag, block, stats = tune_thresholds(predictor, dev)
    path = args.model / LABELS_FILE
    labels = json.loads(path.read_text(encoding="utf-8"))
    print(json.dumps({"before": labels["thresholds"], "after": {"flag": flag, "block": block}}))
    print(json.dumps(stats, indent=2))
    if args.write:
        kept = {k: v for k, v in labels.get("tuning", {}).items() if not k.startswith("dev_")}
        labels["thresholds"] = {"flag": flag, "block": block}
        labels["tuning"] = {**kept, **stats}
        path.write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
    return 0


def _transformer(model_dir: Path, threads: int) -> Predictor:
    """The model dir's transformer alone (no cheap stages): what thresholds apply to."""
    return Predictor(load_model(model_dir, intra_op_threads=threads, sieve=False, early_exit=False))


def _shared(
    rule: float, prefix: str, result: SharedThresholds, reference: Predictor
) -> tuple[float, float, dict[str, float]]:
    """Rule 2's or 3's points and the figures labels.json records of them."""
    print(json.dumps({"reference": reference.model.labels.model_version}))
    stats = {
        "rule": rule,
        f"{prefix}_texts": float(result.texts),
        f"{prefix}_reference_flag_share": result.reference_flag_share,
        f"{prefix}_reference_block_share": result.reference_block_share,
        f"{prefix}_flag_share": result.flag_share,
        f"{prefix}_block_share": result.block_share,
    }
    return result.flag, result.block, stats


def _recall_kept(args: argparse.Namespace) -> tuple[float, float, dict[str, float]]:
    """Rule 3: shares are recalls on the dev split's harmful prompts."""
    _, dev = data_mod.load(args.data, seed=args.seed)
    excluded = set(args.exclude_source)
    harmful = [e.text for e in dev if e.harmful and not e.is_reply and e.source not in excluded]
    reference = _transformer(args.keep_recall, args.threads)
    kept = recall_kept_thresholds(_transformer(args.model, args.threads), reference, harmful)
    return _shared(3.0, "dev", kept, reference)


def _matched(args: argparse.Namespace) -> tuple[float, float, dict[str, float]]:
    """Rule 2: shares are alert rates on the alert pool."""
    reference = _transformer(args.match, args.threads)
    pool = alert_pool(args.data / "train")
    matched = matched_thresholds(_transformer(args.model, args.threads), reference, pool)
    return _shared(2.0, "alert", matched, reference)


if __name__ == "__main__":
    raise SystemExit(main())
