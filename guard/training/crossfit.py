"""Place a model's thresholds on safe prompts of kinds it was never trained on.

    python3 -m guard.training.train ... --no-cascade --holdout-fold 0 --folds 2 --out F0
    python3 -m guard.training.train ... --no-cascade --holdout-fold 1 --folds 2 --out F1
    python3 -m guard.training.crossfit --model models/ --fold F0 --fold F1 [--write]

Why: the dev split's benign prompts are written and sampled alongside the training rows,
so a model that learnt those rows clears them easily and the threshold rule in
:mod:`guard.training.train` lands on a flag point far lower than unseen safe prompts can
bear (three data rounds, model card).  Here each fold model was trained without some kinds
of the repo's written benign prompts (:func:`guard.training.data.fold_kinds`) and scores
exactly those: out-of-fold risks on kinds of lookalike it never saw.  The full model's
thresholds become the lowest points at which those risks pass the false-positive limits,
never below its own dev best-F1 flag point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from guard.classifier.labels import LABELS_FILE
from guard.classifier.predictor import Predictor
from guard.classifier.session import load_model
from guard.training import data as data_mod
from guard.training.files import HOLDOUT_FILE

FLAG_MAX_FPR = 0.04  # issue 3's false-positive target for XSTest's safe lookalikes
BLOCK_MAX_FPR = 0.02  # block acts without review: half of it
CROSSFIT_FILE = "crossfit.json"  # what placed the thresholds, beside the label map
GRID = np.round(np.arange(0.0, 1.0001, 0.005), 3)


def out_of_fold_risks(folds: list[Path], threads: int = 2) -> tuple[np.ndarray, dict[str, int]]:
    """Raw risk of every written benign prompt, from the fold model that never saw its kind."""
    kinds = data_mod.benign_kinds()
    risks: list[np.ndarray] = []
    counts: dict[str, int] = {}
    for folder in folds:
        if not (folder / HOLDOUT_FILE).is_file():
            raise SystemExit(f"{folder} was not trained with --holdout-fold (no {HOLDOUT_FILE})")
        held = json.loads((folder / HOLDOUT_FILE).read_text(encoding="utf-8"))["holdout_kinds"]
        texts = [text for kind in held for text in kinds.get(kind, [])]
        counts |= {kind: len(kinds.get(kind, [])) for kind in held}
        predictor = Predictor(load_model(folder, intra_op_threads=threads))
        risks.append(predictor.harm_probabilities(texts)[:, 0])
    return np.concatenate(risks), counts


def lowest_within(risk: np.ndarray, max_fpr: float, floor: float) -> float:
    """The lowest grid point, not below ``floor``, that flags at most ``max_fpr`` of ``risk``."""
    for threshold in GRID:
        if threshold >= floor and float((risk >= threshold).mean()) <= max_fpr:
            return float(threshold)
    return float(GRID[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the full model's dir")
    parser.add_argument("--fold", type=Path, action="append", required=True, help="fold model dir")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="store the thresholds in labels.json")
    args = parser.parse_args(argv)
    risk, counts = out_of_fold_risks(args.fold, args.threads)
    path = args.model / LABELS_FILE
    labels = json.loads(path.read_text(encoding="utf-8"))
    best_f1_at = float(labels["tuning"]["dev_best_f1_threshold"])
    flag = lowest_within(risk, FLAG_MAX_FPR, best_f1_at)
    block = lowest_within(risk, BLOCK_MAX_FPR, flag)
    record = {
        "rule": "flag: max(dev best-F1 point, out-of-fold FPR <= 4%); block: FPR <= 2%",
        "out_of_fold_texts": len(risk),
        "kinds": counts,
        "fpr_at_dev_flag": round(float((risk >= labels["thresholds"]["flag"]).mean()), 4),
        "fpr_at_flag": round(float((risk >= flag).mean()), 4),
        "fpr_at_block": round(float((risk >= block).mean()), 4),
        "folds": [str(folder) for folder in args.fold],
    }
    print(json.dumps({"before": labels["thresholds"], "after": {"flag": flag, "block": block}}))
    print(json.dumps(record, indent=2))
    if args.write:
        labels["thresholds"] = {"flag": flag, "block": block}
        labels["tuning"] |= {
            "crossfit_texts": float(len(risk)),
            "crossfit_fpr_at_flag": record["fpr_at_flag"],
            "crossfit_fpr_at_block": record["fpr_at_block"],
        }
        path.write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
        (args.model / CROSSFIT_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
