"""Re-apply the threshold rule to a trained model without training it again.

    python3 -m guard.training.retune --data /work/shared/datasets --model runs/v3 [--write]

Loads the model dir's ONNX model, rebuilds the dev split exactly as training does
(``data.load`` with the same seed) and runs :func:`guard.training.thresholds.tune_thresholds`.
Prints the old and new thresholds and dev figures; ``--write`` stores them in the model
dir's labels.json (the model file and its sha256 are untouched).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from guard.classifier.labels import LABELS_FILE
from guard.classifier.predictor import Predictor
from guard.classifier.session import load_model
from guard.training import data as data_mod
from guard.training.thresholds import tune_thresholds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="datasets folder (holds train/)")
    parser.add_argument("--model", type=Path, required=True, help="model dir (guard.onnx, labels)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="store the result in labels.json")
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    raise SystemExit(main())
