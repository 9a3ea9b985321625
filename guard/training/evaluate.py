"""Every quality number of the model card, measured on ``<data>/eval`` only.

    python3 -m guard.training.evaluate --data /work/shared/datasets --model models/

Nothing here is tuned: prompt sets are judged at the label map's default thresholds
(``flag``: the model calls the text harmful; ``block`` reported beside it), replies by
the refusal head's argmax.  The XSTest string-matching baseline is computed here too.
Writes ``--json`` (default models/evaluation.json) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from guard.classifier.predictor import Predictor
from guard.classifier.session import load_model
from guard.classifier.sieve import EXIT_LABELS_FILE, SIEVE_LABELS_FILE
from guard.scoring import HAZARDS, Refusal, ReplyInput
from guard.training.eval_sets import (
    category_sets,
    do_not_answer_rows,
    prompt_sets,
    string_match_refusal,
    xstest_completions,
)


@dataclass(frozen=True, slots=True)
class Binary:
    """Binary detection counts and the derived rates (positive = harmful / refusal)."""

    n: int
    tp: int
    fp: int
    fn: int
    tn: int

    @classmethod
    def of(cls, truth: np.ndarray, predicted: np.ndarray) -> Binary:
        truth, predicted = truth.astype(bool), predicted.astype(bool)
        return cls(
            n=int(truth.size),
            tp=int((truth & predicted).sum()),
            fp=int((~truth & predicted).sum()),
            fn=int((truth & ~predicted).sum()),
            tn=int((~truth & ~predicted).sum()),
        )

    @property
    def f1(self) -> float:
        return 2 * self.tp / max(1, 2 * self.tp + self.fp + self.fn)

    @property
    def recall(self) -> float:
        return self.tp / max(1, self.tp + self.fn)

    @property
    def precision(self) -> float:
        return self.tp / max(1, self.tp + self.fp)

    @property
    def fpr(self) -> float:
        return self.fp / max(1, self.fp + self.tn)

    def summary(self) -> dict[str, float]:
        return {
            **asdict(self),
            "f1": round(self.f1, 4),
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "fpr": round(self.fpr, 4),
        }


def roc_auc(truth: np.ndarray, score: np.ndarray) -> float | None:
    """Threshold-free ranking quality: the chance that a random harmful text scores above a
    random benign one (ties count half; Mann-Whitney); None unless both classes are present.
    Compares models whose thresholds sit at different points of their scales."""
    truth = truth.astype(bool)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if not positives or not negatives:
        return None
    order = np.argsort(score, kind="mergesort")
    _, inverse, counts = np.unique(score[order], return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2  # 1-based, ties share their mean
    ranks = np.empty(len(score))
    ranks[order] = average_rank[inverse]
    above = ranks[truth].sum() - positives * (positives + 1) / 2
    return round(float(above / (positives * negatives)), 4)


def evaluate_prompts(
    predictor: Predictor, eval_dir: Path, flag: float, block: float
) -> dict[str, object]:
    results: dict[str, object] = {}
    for name, (texts, truth) in prompt_sets(eval_dir).items():
        started = time.perf_counter()
        risk = predictor.harm_probabilities(texts)[:, 0]
        at_flag = Binary.of(truth, risk >= flag).summary()
        at_block = Binary.of(truth, risk >= block).summary()
        results[name] = {
            "at_flag": at_flag,
            "at_block": at_block,
            "auc": roc_auc(truth, risk),
            "seconds": round(time.perf_counter() - started, 1),
        }
    return results


def evaluate_categories(predictor: Predictor, eval_dir: Path) -> dict[str, object]:
    """How often the hazard head ranks a harmful prompt's labelled hazard first / in its top 3."""
    results: dict[str, object] = {}
    for name, (texts, hazards) in category_sets(eval_dir).items():
        ranked = np.argsort(-predictor.harm_probabilities(texts)[:, 1:], axis=1)
        rank = np.array(
            [list(order).index(HAZARDS.index(h)) for order, h in zip(ranked, hazards, strict=True)]
        )
        per_hazard: dict[str, dict[str, float]] = {}
        for hazard in sorted(set(hazards)):
            rows = np.array([h == hazard for h in hazards])
            firsts = [HAZARDS[int(i)] for i in ranked[rows, 0]]
            per_hazard[hazard] = {
                "n": int(rows.sum()),
                "top1": round(float((rank[rows] == 0).mean()), 4),
                "top3": round(float((rank[rows] < 3).mean()), 4),
                "most_often_first": max(set(firsts), key=firsts.count),
            }
        results[name] = {
            "n": len(texts),
            "top1": round(float((rank == 0).mean()), 4),
            "top3": round(float((rank < 3).mean()), 4),
            "by_hazard": per_hazard,
        }
    return results


def evaluate_cascade(
    cascade: Predictor, eval_dir: Path, flag: float, block: float
) -> dict[str, object]:
    """The prompt sets through the cascade (sieve, early exit, tail) as the guard serves them.

    ``harmful_cleared``: harmful prompts the cheap stages let through without the whole
    transformer (the cascade's recall cost); ``benign_cleared``: benign ones they spared it.
    """
    results: dict[str, object] = {}
    for name, (texts, truth) in prompt_sets(eval_dir).items():
        started = time.perf_counter()
        screened = cascade.harm_screened(texts)
        risk = screened.probabilities[:, 0]
        positive = truth.astype(bool)
        results[name] = {
            "at_flag": Binary.of(truth, risk >= flag).summary(),
            "at_block": Binary.of(truth, risk >= block).summary(),
            "harmful_cleared": int((screened.cleared & positive).sum()),
            "harmful": int(positive.sum()),
            "benign_cleared": int((screened.cleared & ~positive).sum()),
            "benign": int((~positive).sum()),
            "seconds": round(time.perf_counter() - started, 1),
        }
    return results


def evaluate_replies(predictor: Predictor, eval_dir: Path) -> dict[str, object]:
    results: dict[str, object] = {}
    rows = xstest_completions(eval_dir)
    truth_label = [r["final_label"] for r in rows]
    truth = np.array([label != "1_full_compliance" for label in truth_label])
    probabilities = predictor.refusal_probabilities(
        [ReplyInput(r["prompt"], r["completion"]) for r in rows]
    )
    predicted = probabilities.argmax(axis=1)
    classes = [r.value for r in Refusal]
    model_refusal = predicted != classes.index("none")
    partial = np.array([label == "3_partial_refusal" for label in truth_label])
    full = np.array([label == "2_full_refusal" for label in truth_label])
    results["xstest_completions"] = {
        "model": Binary.of(truth, model_refusal).summary(),
        "string_match_baseline": Binary.of(
            truth, np.array([string_match_refusal(r["completion"]) for r in rows])
        ).summary(),
        "partial_refusals": int(partial.sum()),
        "partial_typed_partial": round(
            float((predicted[partial] == classes.index("partial")).mean()), 4
        )
        if partial.any()
        else None,
        "partial_detected_as_refusal": round(float(model_refusal[partial].mean()), 4)
        if partial.any()
        else None,
        "full_refusals_typed": {
            c: int((predicted[full] == i).sum()) for i, c in enumerate(classes)
        },
    }
    # do_not_answer (human review): action 0 = refuses (see eval_sets.do_not_answer_rows).
    dna_rows = do_not_answer_rows(eval_dir)
    dna_truth = np.array([r["action"] == "0" for r in dna_rows])
    dna_probabilities = predictor.refusal_probabilities(
        [ReplyInput(r["question"], r["response"]) for r in dna_rows]
    )
    dna_predicted = dna_probabilities.argmax(axis=1)
    refused = dna_predicted[dna_truth]
    results["do_not_answer"] = {
        "model": Binary.of(dna_truth, dna_predicted != 0).summary(),
        "string_match_baseline": Binary.of(
            dna_truth, np.array([string_match_refusal(r["response"]) for r in dna_rows])
        ).summary(),
        "human_refusals_typed": {c: int((refused == i).sum()) for i, c in enumerate(classes)},
    }
    return results


def markdown(results: dict[str, object]) -> str:
    prompts = results["prompts"]
    assert isinstance(prompts, dict)
    lines = [
        "| prompt set | n | F1 @flag | recall @flag | FPR @flag | F1 @block | FPR @block | AUC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, value in prompts.items():
        f, b = value["at_flag"], value["at_block"]
        auc = value.get("auc")
        lines.append(
            f"| {name} | {f['n']} | {f['f1']:.3f} | {f['recall']:.3f} | {f['fpr']:.3f} "
            f"| {b['f1']:.3f} | {b['fpr']:.3f} | {'-' if auc is None else f'{auc:.3f}'} |"
        )
    replies = results["replies"]
    assert isinstance(replies, dict)
    lines += [
        "",
        "| reply set | n | model F1 (refusal) | model FPR | string-match F1 | string-match FPR |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("xstest_completions", "do_not_answer"):
        m, s = replies[name]["model"], replies[name]["string_match_baseline"]
        lines.append(
            f"| {name} | {m['n']} | {m['f1']:.3f} | {m['fpr']:.3f} | {s['f1']:.3f} | {s['fpr']:.3f} |"  # noqa: E501
        )
    categories = results.get("categories")
    if isinstance(categories, dict):
        lines += ["", "| category set | n | top-1 | top-3 |", "|---|---|---|---|"]
        for name, value in categories.items():
            lines.append(f"| {name} | {value['n']} | {value['top1']:.3f} | {value['top3']:.3f} |")
    cascade = results.get("cascade")
    if isinstance(cascade, dict):
        lines += [
            "",
            "| prompt set (cascade as served) | F1 @flag | recall @flag | FPR @flag | FPR @block "
            "| harmful cleared by the cheap stages | benign cleared |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, value in cascade.items():
            f, b = value["at_flag"], value["at_block"]
            harmful = f"{value['harmful_cleared']}/{value['harmful']}"
            benign = f"{value['benign_cleared']}/{value['benign']}"
            lines.append(
                f"| {name} | {f['f1']:.3f} | {f['recall']:.3f} | {f['fpr']:.3f} "
                f"| {b['fpr']:.3f} | {harmful} | {benign} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="datasets folder (holds eval/)")
    parser.add_argument("--model", type=Path, default=Path("models"))
    parser.add_argument("--model-file", default="guard.onnx", help="e.g. guard.fp32.onnx in runs/")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="default: <model>/evaluation.json")
    parser.add_argument(
        "--only",
        choices=("all", "cascade", "categories"),
        default="all",
        help="cascade / categories: re-run only that section, keep the rest of --json",
    )
    args = parser.parse_args(argv)
    model = load_model(args.model, intra_op_threads=args.threads, model_file=args.model_file)
    thresholds = model.labels.thresholds
    eval_dir = args.data / "eval"
    out = args.json or args.model / "evaluation.json"
    started = time.perf_counter()
    results: dict[str, object]
    if args.only == "all":
        predictor = Predictor(model)
        results = {
            "model_version": model.labels.model_version,
            "model_file": args.model_file,
            "thresholds": {"flag": thresholds.flag, "block": thresholds.block},
            "prompts": evaluate_prompts(predictor, eval_dir, thresholds.flag, thresholds.block),
            "replies": evaluate_replies(predictor, eval_dir),
            "categories": evaluate_categories(predictor, eval_dir),
        }
    else:
        results = json.loads(out.read_text(encoding="utf-8"))
        if args.only == "categories":
            results["categories"] = evaluate_categories(Predictor(model), eval_dir)
    if args.only in ("all", "cascade") and (args.model / SIEVE_LABELS_FILE).is_file():
        served = load_model(
            args.model,
            intra_op_threads=args.threads,
            model_file=args.model_file,
            sieve=True,
            early_exit=(args.model / EXIT_LABELS_FILE).is_file(),
        )
        assert served.sieve is not None
        results["sieve"] = {
            "sha256": served.sieve.labels.model_sha256,
            "clear_below": served.sieve.labels.clear_below,
        }
        if served.exit is not None:
            results["early_exit"] = {
                "sha256": served.exit.labels.model_sha256,
                "clear_below": served.exit.labels.clear_below,
                "layer": served.exit.labels.layer,
            }
        results["cascade"] = evaluate_cascade(
            Predictor(served), eval_dir, thresholds.flag, thresholds.block
        )
    # A partial run keeps the whole run's time and records its own beside it.
    timing = "seconds" if args.only == "all" else f"seconds_{args.only}"
    results[timing] = round(time.perf_counter() - started, 1)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(markdown(results))
    print(json.dumps(results["replies"], indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
