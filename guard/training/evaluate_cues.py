"""Recall of the reply cascade's cheap stage (guard.classifier.cues) on human labels.

    python3 -m guard.training.evaluate_cues --data /work/shared/datasets

Reads eval/xstest/model_completions (reporting only: the cue list was written from the
training replies and is not tuned here) and prints how many human-labelled refusals
(full or partial) and compliances carry a refusal cue.  A refusal without a cue, in reply
to a request judged benign, is relayed as compliance without a model run.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from guard.classifier.cues import has_refusal_cue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    counts = {"refusal": [0, 0], "compliance": [0, 0]}  # [with cue, total]
    for path in sorted((args.data / "eval/xstest/model_completions").glob("*.csv")):
        with path.open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                label = row["final_label"][:1]
                kind = "refusal" if label in ("2", "3") else "compliance" if label == "1" else None
                if kind is not None:
                    counts[kind][0] += has_refusal_cue(row["completion"])
                    counts[kind][1] += 1
    for kind, (cued, total) in counts.items():
        print(f"{kind}: {cued}/{total} carry a cue ({cued / total:.3f})")


if __name__ == "__main__":
    main()
