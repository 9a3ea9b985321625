"""Re-apply a threshold rule to a trained model without training it again.

    python3 -m guard.training.retune --data /work/shared/datasets --model runs/v3 [--write]
    python3 -m guard.training.retune --data /work/shared/datasets --model V11 --match models/

Rule 1 (the default) loads the model dir's ONNX model, rebuilds the dev split exactly as
training does (``data.load`` with the same seed) and runs
:func:`guard.training.thresholds.tune_thresholds`.  Rule 2 (``--match REFERENCE``) places
the points where the model flags and blocks as much of the alert pool
(:func:`guard.training.thresholds.alert_pool`) as the reference model does at its own
points (the transformers alone, no cheap stages).  Prints the old and new thresholds and
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
from guard.training.thresholds import alert_pool, matched_thresholds, tune_thresholds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="datasets folder (holds train/)")
    parser.add_argument("--model", type=Path, required=True, help="model dir (guard.onnx, labels)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="store the result in labels.json")
    parser.add_argument(
        "--match",
        type=Path,
        default=None,
        metavar="REFERENCE",
        help="rule 2: match this model dir's alert rates on the alert pool",
    )
    args = parser.parse_args(argv)
    if args.match is not None:
        flag, block, stats = _matched(args)
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


def _matched(args: argparse.Namespace) -> tuple[float, float, dict[str, float]]:
    def transformer(model_dir: Path) -> Predictor:
        model = load_model(model_dir, intra_op_threads=args.threads, sieve=False, early_exit=False)
        return Predictor(model)

    reference = transformer(args.match)
    matched = matched_thresholds(
        transformer(args.model), reference, alert_pool(args.data / "train")
    )
    stats = {
        "rule": 2.0,  # 2: alert rates on the alert pool matched to the reference model's
        "alert_pool": float(matched.pool),
        "alert_reference_flag_rate": matched.reference_flag_rate,
        "alert_reference_block_rate": matched.reference_block_rate,
        "alert_flag_rate": matched.flag_rate,
        "alert_block_rate": matched.block_rate,
    }
    print(json.dumps({"reference": reference.model.labels.model_version}))
    return matched.flag, matched.block, stats


if __name__ == "__main__":
    raise SystemExit(main())
