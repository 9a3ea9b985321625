"""The one quality table: every measured number beside the published anchors.

Reads what the other measurements wrote, runs no model itself:

* ``models/evaluation.json``, from ``python3 -m guard.training.evaluate --data
  ../shared/datasets --model models/`` (prompt harm and refusal detection, eval/ only;
  the model card quotes the same file), and
* ``benchmarks/results/multiturn_eval.json``, from ``python3 -m benchmarks.multiturn_eval
  --data /work/shared/datasets --json-out benchmarks/results/multiturn_eval.json`` (what
  the guard decides: through the engine with the shipped policies, tuned on train/),
* ``benchmarks/results/classifier_speed.json``, from ``benchmarks/classifier_speed.py``
  (the model card's speed section).

Anchors are published figures for other systems on the same sets, as quoted in issues 3
and 4 (from the WildGuard, Llama Guard and ShieldGemma reports); they were not re-measured
here and are marked so.  A file that is missing gives "not yet measured" cells.

    python3 -m benchmarks.quality --readme benchmarks/README.md
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.readme_block import load_result, update_block

EVALUATE_CMD = "python3 -m guard.training.evaluate --data ../shared/datasets --model models/"
MULTITURN_CMD = (
    "python3 -m benchmarks.multiturn_eval --data /work/shared/datasets "
    "--json-out benchmarks/results/multiturn_eval.json"
)  # through the engine with the shipped policies (benchmarks/README.md, conversation memory)
SPEED_CMD = (
    "python3 benchmarks/classifier_speed.py --model-dir models --fp32 FP32_EXPORT "
    "--out benchmarks/results/classifier_speed.json"
)
MISSING = "not yet measured"


@dataclass(frozen=True)
class Anchor:
    """A published figure for another system on the same set (not measured here)."""

    system: str
    value: str


# Prompt harm F1 (and FPR where published), issue 3.
PROMPT_ANCHORS: dict[str, list[Anchor]] = {
    "harmbench_test": [Anchor("WildGuard", "F1 0.989"), Anchor("Llama Guard 2", "F1 0.940")],
    "simplesafetytests": [Anchor("WildGuard", "F1 0.995")],
    "xstest_prompts": [Anchor("Llama Guard 3-8B", "F1 0.884, FPR 4.4%")],
    "openai_moderation": [
        Anchor("Llama Guard 2", "F1 0.761"),
        Anchor("ShieldGemma-9B", "F1 0.821"),
    ],
}
PROMPT_TARGETS = {
    "harmbench_test": "F1 ≥ 0.98",
    "simplesafetytests": "F1 ≥ 0.99",
    "xstest_prompts": "F1 ≥ 0.92, FPR ≤ 4%",
    "jailbreakbench": "report",
    "cyberseceval_frr": "report FPR",
    "cyberseceval_frr_multilingual": "report FPR",
    "openai_moderation": "report",
}
PROMPT_ORDER = list(PROMPT_TARGETS)


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3f}"


def prompt_rows(evaluation: dict[str, Any] | None) -> list[str]:
    prompts = (evaluation or {}).get("prompts", {})
    rows = []
    for name in PROMPT_ORDER + [n for n in prompts if n not in PROMPT_ORDER]:
        result = prompts.get(name)
        flag = (result or {}).get("at_flag", {})
        block = (result or {}).get("at_block", {})
        positives = flag.get("tp", 0) + flag.get("fn", 0)
        f1 = _num(flag.get("f1")) if result and positives else "-"  # all-benign sets: FPR only
        anchors = "; ".join(f"{a.system} {a.value}" for a in PROMPT_ANCHORS.get(name, [])) or "-"
        rows.append(
            f"| {name} | {flag.get('n', MISSING)} | {f1 if result else MISSING} "
            f"| {_pct(flag.get('fpr')) if result else MISSING} "
            f"| {(_num(block.get('f1')) if positives else '-') if result else MISSING} "
            f"| {_pct(block.get('fpr')) if result else MISSING} "
            f"| {PROMPT_TARGETS.get(name, 'report')} | {anchors} |"
        )
    return rows


def cascade_rows(evaluation: dict[str, Any] | None) -> list[str]:
    """The prompt sets as served: cheap stages (sieve + early exit) in front of the model."""
    cascade = (evaluation or {}).get("cascade")
    if not cascade:
        return []
    rows = [
        "#### Prompt harm as served: the cascade (same command)",
        "",
        "The cheap stages may clear a short text only when both agree; what they cleared is "
        "never seen by the transformer's tail. Cleared counts show what the cascade spared "
        "the transformer and what it cost.",
        "",
        "| set | F1 @flag | recall @flag | FPR @flag | FPR @block | harmful cleared "
        "| benign cleared |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, value in cascade.items():
        f, b = value["at_flag"], value["at_block"]
        f1 = _num(f["f1"]) if value["harmful"] else "-"
        recall = _num(f["recall"]) if value["harmful"] else "-"
        rows.append(
            f"| {name} | {f1} | {recall} | {_pct(f['fpr']) if value['benign'] else '-'} "
            f"| {_pct(b['fpr']) if value['benign'] else '-'} "
            f"| {value['harmful_cleared']}/{value['harmful']} "
            f"| {value['benign_cleared']}/{value['benign']} |"
        )
    return [*rows, ""]


def reply_rows(evaluation: dict[str, Any] | None) -> list[str]:
    replies = (evaluation or {}).get("replies", {})
    rows = []
    for name, anchor in (
        ("xstest_completions", "WildGuard F1 0.928 (XSTest-Resp subset); string match 0.879"),
        ("do_not_answer", "-"),
    ):
        result = replies.get(name)
        model = (result or {}).get("model", {})
        baseline = (result or {}).get("string_match_baseline", {})
        rows.append(
            f"| {name} | {model.get('n', MISSING)} | {_num(model.get('f1'))} "
            f"| {_pct(model.get('fpr'))} | {_num(baseline.get('f1'))} "
            f"| {_pct(baseline.get('fpr'))} | {anchor} |"
        )
    xs = replies.get("xstest_completions", {})
    extra = [
        "",
        f"Partial refusals in the XSTest completions: {xs.get('partial_refusals', MISSING)}; "
        f"detected as a refusal {_pct(xs.get('partial_detected_as_refusal'))}, typed "
        f"`partial` {_pct(xs.get('partial_typed_partial'))}.  Full refusals typed: "
        f"{xs.get('full_refusals_typed', MISSING)}.  do_not_answer refusals (human review) "
        f"typed: {replies.get('do_not_answer', {}).get('human_refusals_typed', MISSING)}.",
    ]
    return rows + extra


def category_rows(evaluation: dict[str, Any] | None) -> list[str]:
    """Hazard ranking on prompts whose own label names one hazard (model card, Categories)."""
    categories = (evaluation or {}).get("categories")
    if not categories:
        return []
    rows = [
        "#### Hazard categories (same command; top-1 / top-3 = the labelled hazard ranked "
        "first / among the first three)",
        "",
        "| set | n graded | top-1 | top-3 | published anchors |",
        "|---|---:|---:|---:|---|",
    ]
    for name, value in categories.items():
        rows.append(
            f"| {name} | {value['n']} | {_num(value['top1'])} | {_num(value['top3'])} | - |"
        )
    return [*rows, ""]


def multiturn_rows(multiturn: dict[str, Any] | None) -> list[str]:
    m = multiturn or {}
    who = "guard (engine)" if m.get("through") == "engine" else "memory"
    rows = [
        f"| measure | {who} | per-turn scorer alone | target (issue 4) |",
        "|---|---:|---:|---|",
        f"| escalating conversations flagged by the turn after the first clearly harmful "
        f"turn (actorattack, crescendo_examples) | {_pct(m.get('attack_caught'))} "
        f"| {_pct(m.get('attack_caught_single'))} | ≥ 90% |",
    ]
    flagged = m.get("benign_flagged", {})
    single = m.get("benign_flagged_single", {})
    for source in flagged or ["mtbench", "mtbench101", "tomgibbs-*"]:
        rows.append(
            f"| benign conversations flagged: {source} | {_pct(flagged.get(source))} "
            f"| {_pct(single.get(source))} | ≤ 2% |"
        )
    forged = m.get("forged_detected", {})
    for probe in forged or ["forged assistant turns"]:
        rows.append(f"| forged history detected: {probe} | {_pct(forged.get(probe))} | - | ≥ 99% |")
    faults = m.get("clean_faults")
    of = f" (of {m['clean_requests']:,} requests)" if "clean_requests" in m else ""
    rows.append(
        f"| faults on histories the guard relayed itself | "
        f"{MISSING if faults is None else f'{faults}{of}'} | - | 0 |"
    )
    if m.get("curve"):
        turns = range(1, len(m["curve"]) + 1)
        rows += [
            "",
            "| flagged by turn | " + " | ".join(str(t) for t in turns) + " |",
            "|---" * (len(m["curve"]) + 1) + "|",
            f"| {who} | " + " | ".join(_pct(x) for x in m["curve"]) + " |",
            "| per-turn alone | " + " | ".join(_pct(x) for x in m["curve_single"]) + " |",
        ]
    if m and m.get("through") == "engine":
        rows.append(
            f"\nFlagged: the guard's request decision (flag or block, any reason) under the "
            f"shipped policies; clearly harmful ≥ {m['block_threshold']:.2f}; "
            f"conversations: {m.get('conversations')}."
        )
    elif m:
        rows.append(
            f"\nThresholds flag ≥ {m['flag_threshold']:.2f}, block ≥ {m['block_threshold']:.2f}; "
            f"conversations: {m.get('conversations')}."
        )
    return rows


def speed_rows(speed: dict[str, Any] | None) -> list[str]:
    models = (speed or {}).get("models", {})
    rows = [
        "| model | size MB | 16 tokens p50 ms | 64 tokens p50 ms | 256 tokens p50 ms "
        "| 64-token turns/s, two cores, batched |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in models or ["int8"]:
        entry = models.get(name, {})
        by_tokens = {row["tokens"]: row for row in entry.get("one_core", [])}
        cells = [_num(by_tokens.get(n, {}).get("p50_ms")) for n in (16, 64, 256)]
        rate = entry.get("two_cores_batched", {}).get("turns_per_s", MISSING)
        rows.append(f"| {name} | {entry.get('size_mb', MISSING)} | {' | '.join(cells)} | {rate} |")
    rows.append("\nTarget (issue 3): at most 3 ms p50 for a 64-token turn on one core.")
    return rows


def render(
    evaluation: dict[str, Any] | None,
    multiturn: dict[str, Any] | None,
    speed: dict[str, Any] | None = None,
) -> str:
    version = (evaluation or {}).get("model_version", MISSING)
    thresholds = (evaluation or {}).get("thresholds", {})
    lines = [
        f"Model `{version}` at its shipped thresholds (flag {thresholds.get('flag', MISSING)}, "
        f"block {thresholds.get('block', MISSING)}); eval/ splits only, nothing tuned on them. "
        "Anchor columns are published figures for other systems on the same sets (quoted in "
        "issues 3 and 4), not re-measured here.",
        "",
        f"#### Prompt harm (command: `{EVALUATE_CMD}`)",
        "",
        "| set | n | F1 @flag | FPR @flag | F1 @block | FPR @block | target | published anchors |",
        "|---|---:|---:|---:|---:|---:|---|---|",
        *prompt_rows(evaluation),
        "",
        *cascade_rows(evaluation),
        *category_rows(evaluation),
        "#### Refusal detection on replies (same command; refusal = full or partial)",
        "",
        "| set | n | model F1 | model FPR | keyword (string match) F1 | keyword FPR "
        "| published anchors |",
        "|---|---:|---:|---:|---:|---:|---|",
        *reply_rows(evaluation),
        "",
        f"#### Multi-turn (command: `{MULTITURN_CMD}`)",
        "",
        *multiturn_rows(multiturn),
        "",
        f"#### Classifier speed (command: `{SPEED_CMD}`)",
        "",
        *speed_rows(speed),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluation", type=Path, default=Path("models/evaluation.json"))
    parser.add_argument(
        "--multiturn", type=Path, default=Path("benchmarks/results/multiturn_eval.json")
    )
    parser.add_argument(
        "--speed", type=Path, default=Path("benchmarks/results/classifier_speed.json")
    )
    parser.add_argument("--readme", type=Path, help="rewrite the quality block of this file")
    args = parser.parse_args(argv)
    text = render(
        load_result(args.evaluation), load_result(args.multiturn), load_result(args.speed)
    )
    print(text)
    if args.readme:
        update_block(args.readme, "quality", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
