"""Tables and plots from a ``benchmarks.gateways`` result file.

Prints the markdown tables, writes the plots to ``--img`` and, with ``--readme``, puts
the tables between the ``<!-- gateways:begin -->`` and ``<!-- gateways:end -->``
markers of benchmarks/README.md (``--block proxy_hop`` for that block) so the document
quotes exactly what the file holds.

    python3 -m benchmarks.report benchmarks/results/gateways.json --readme benchmarks/README.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.harness.stats import median, paired_added, ratio, spread
from benchmarks.readme_block import update_block


def _f(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _by(runs: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[tuple(run[k] for k in keys)].append(run)
    for group in groups.values():
        group.sort(key=lambda r: r.get("repeat", 0))
    return groups


def _base_name(report: dict[str, Any]) -> str:
    return "direct"


def latency_table(report: dict[str, Any]) -> str:
    runs = report["latency"]
    groups = _by(runs, "target", "concurrency")
    lines = [
        "| concurrency | target | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s "
        "| CPU ms/req |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrency in report["concurrency"]:
        base = groups[("direct", concurrency)]
        for (target, c), group in groups.items():
            if c != concurrency:
                continue
            added = target != "direct"
            a50 = paired_added([r["p50_ms"] for r in group], [r["p50_ms"] for r in base])
            a99 = paired_added([r["p99_ms"] for r in group], [r["p99_ms"] for r in base])
            lines.append(
                f"| {c} | {target} | {_f(median(r['p50_ms'] for r in group), 3)} "
                f"| {_f(median(r['p99_ms'] for r in group), 3)} "
                f"| {_f(a50, 3) if added else '-'} | {_f(a99, 3) if added else '-'} "
                f"| {median(r['requests_per_s'] for r in group):.0f} "
                f"| {_f(median(r['cpu_ms_per_request'] for r in group), 3)} |"
            )
    return "\n".join(lines)


def max_rps(report: dict[str, Any]) -> dict[str, tuple[float, int, float, float]]:
    """target -> (best median req/s, at concurrency, min, max over repeats)."""
    best: dict[str, tuple[float, int, float, float]] = {}
    for (target, c), group in _by(report["latency"], "target", "concurrency").items():
        rates = [r["requests_per_s"] for r in group]
        value = median(rates)
        if target not in best or value > best[target][0]:
            best[target] = (value, c, *spread(rates))
    return best


def rps_table(report: dict[str, Any]) -> str:
    best = max_rps(report)
    litellm = best.get("litellm", (float("nan"), 0, 0.0, 0.0))[0]
    lines = [
        "| target | max req/s (median) | at concurrency | repeats min–max | × LiteLLM |",
        "|---|---:|---:|---|---:|",
    ]
    for target, (value, c, low, high) in sorted(best.items(), key=lambda kv: -kv[1][0]):
        lines.append(
            f"| {target} | {value:.0f} | {c} | {low:.0f}–{high:.0f} | {_f(ratio(value, litellm))} |"
        )
    return "\n".join(lines)


def hop_table(report: dict[str, Any]) -> str:
    groups = _by(report["hop"], "target", "concurrency")
    lines = [
        "| concurrency | target | p50 ms | p99 ms | added p50 ms | req/s | CPU ms/req |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for (target, c), group in sorted(groups.items(), key=lambda kv: kv[0][1]):
        base = groups[("direct", c)]
        a50 = paired_added([r["p50_ms"] for r in group], [r["p50_ms"] for r in base])
        lines.append(
            f"| {c} | {target} | {_f(median(r['p50_ms'] for r in group), 3)} "
            f"| {_f(median(r['p99_ms'] for r in group), 3)} "
            f"| {_f(a50, 3) if target != 'direct' else '-'} "
            f"| {median(r['requests_per_s'] for r in group):.0f} "
            f"| {_f(median(r.get('cpu_ms_per_request', float('nan')) for r in group), 3)} |"
        )
    return "\n".join(lines)


def stream_table(report: dict[str, Any]) -> str:
    groups = _by(report["stream"], "target")
    base = groups[("direct",)]
    lines = [
        "| target | first token p50 ms | added first token ms | chunk gap p50 ms "
        "| added gap p50 ms | gap p99 ms | content events/stream | whole stream p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (target,), group in groups.items():
        added = target != "direct"
        ttft = paired_added(
            [r["first_token_p50_ms"] for r in group], [r["first_token_p50_ms"] for r in base]
        )
        gap = paired_added([r["gap_p50_ms"] for r in group], [r["gap_p50_ms"] for r in base])
        lines.append(
            f"| {target} | {_f(median(r['first_token_p50_ms'] for r in group))} "
            f"| {_f(ttft) if added else '-'} | {_f(median(r['gap_p50_ms'] for r in group))} "
            f"| {_f(gap) if added else '-'} | {_f(median(r['gap_p99_ms'] for r in group))} "
            f"| {_f(median(r['events_per_stream'] for r in group), 1)} "
            f"| {_f(median(r['total_p50_ms'] for r in group))} |"
        )
    return "\n".join(lines)


def turn_costs(report: dict[str, Any]) -> dict[int, tuple[float, float, float, int]]:
    """turn -> (guard p50 ms, direct p50 ms, added p50 ms, request bytes)."""
    costs = {}
    for (turn,), group in sorted(_by(report["turns"], "turn").items()):
        costs[turn] = (
            median(r["guard_ms"] for r in group),
            median(r["direct_ms"] for r in group),
            median(r["guard_ms"] - r["direct_ms"] for r in group),
            int(median(r["request_bytes"] for r in group)),
        )
    return costs


def turns_table(report: dict[str, Any]) -> str:
    costs = turn_costs(report)
    first = costs[min(costs)]
    decisions = {r["decision"] for r in report["turns"]}
    lines = [
        "| turn | request bytes | guard p50 ms | direct p50 ms | added p50 ms "
        "| added ÷ turn 1 | total ÷ turn 1 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for turn, (guard, direct, added, size) in costs.items():
        lines.append(
            f"| {turn} | {size} | {_f(guard)} | {_f(direct)} | {_f(added)} "
            f"| {_f(ratio(added, first[2]))} | {_f(ratio(guard, first[0]))} |"
        )
    conversations = len({r["conversation"] for r in report["turns"]})
    lines.append("")
    lines.append(
        f"{conversations} conversations; guard decisions seen: {', '.join(sorted(decisions))}."
    )
    return "\n".join(lines)


def guard_counters_table(report: dict[str, Any]) -> str:
    lines = [
        "| guard | requests judged | decisions (direction/decision) | scoring failures |",
        "|---|---:|---|---:|",
    ]
    for name, counters in report["guard_counters"].items():
        decisions = ", ".join(f"{k} {v:,.0f}" for k, v in counters["decisions"].items() if v)
        lines.append(
            f"| {name} | {counters['chat_requests']:,.0f} | {decisions or '-'} "
            f"| {counters['scoring_failures']:,.0f} |"
        )
    return "\n".join(lines)


def memory_table(report: dict[str, Any]) -> str:
    m = report["memory"]
    per_http = (m["rss_filled_mib"] - m["rss_warm_mib"]) * 2**20 / max(1, m["conversations"])
    held = m["prefilled_conversations"]
    per_pre = (m["prefilled_rss_warm_mib"] - m["rss_warm_mib"]) * 2**20 / max(1, held)
    return "\n".join(
        [
            "| guard (enforce) process | conversations held | resident MiB |",
            "|---|---:|---:|",
            f"| at start (idle, model loaded) | 0 | {_f(m['rss_start_mib'], 1)} |",
            "| after 2 s of requests (each a new fingerprinted conversation) "
            f"| {m.get('warm_conversations', 'n/a')} | {_f(m['rss_warm_mib'], 1)} |",
            f"| filled over HTTP for {m['seconds']:.0f} s | {m['conversations']:,} "
            f"| {_f(m['rss_filled_mib'], 1)} |",
            f"| second process, stored at start-up, after 2 s of requests | {held:,} "
            f"| {_f(m['prefilled_rss_warm_mib'], 1)} |",
            "",
            f"HTTP fill: {m['requests']:,} one-turn requests with fresh `x-guard-conversation-id`s "
            f"({m['failures']} failed), about {per_http:,.0f} bytes of resident growth per "
            f"conversation. Stored at start-up: `{m['prefill_launcher']}` "
            f"({m['prefill_seconds']:.0f} s to start), about {per_pre:,.0f} bytes per "
            "conversation over the warm single-conversation process.",
        ]
    )


def targets_check(report: dict[str, Any]) -> str:
    lines = ["| target (issue 7 / issue 2) | measured | met |", "|---|---:|:---:|"]
    if "latency" in report:
        groups = _by(report["latency"], "target", "concurrency")
        enforce = next((t for t, c in groups if t.startswith("guard-enforce") and c == 1), None)
        if enforce and ("direct", 1) in groups:
            added = paired_added(
                [r["p50_ms"] for r in groups[(enforce, 1)]],
                [r["p50_ms"] for r in groups[("direct", 1)]],
            )
            met = "yes" if added <= 5 else "no"
            if report["scorer"] != "onnx":
                met = "n/a: keyword scorer, the target is for the model"
            lines.append(
                f"| enforce adds ≤ 5 ms p50 at c=1 (64-token turn) | {_f(added, 3)} ms | {met} |"
            )
        best = max_rps(report)
        guards = [t for t in best if t.startswith("guard")]
        if "litellm" in best and guards:
            worst = min(best[t][0] for t in guards)
            times = ratio(worst, best["litellm"][0])
            lines.append(
                f"| guard ≥ 3× LiteLLM max req/s (slower guard mode) | {_f(times)}× "
                f"| {'yes' if times >= 3 else 'no'} |"
            )
    if "hop" in report:
        groups = _by(report["hop"], "target", "concurrency")
        guard = next((t for t, c in groups if t.startswith("guard") and c == 1), None)
        if guard:
            added = paired_added(
                [r["p50_ms"] for r in groups[(guard, 1)]],
                [r["p50_ms"] for r in groups[("direct", 1)]],
            )
            lines.append(
                f"| pass-through hop adds ≤ 1 ms p50 at c=1 | {_f(added, 3)} ms "
                f"| {'yes' if added <= 1 else 'no'} |"
            )
    if "turns" in report:
        costs = turn_costs(report)
        if 1 in costs and 50 in costs:
            by_added = ratio(costs[50][2], costs[1][2])
            by_total = ratio(costs[50][0], costs[1][0])
            lines.append(
                f"| turn 50 ≤ 1.2× turn 1 (added latency; total in brackets) "
                f"| {_f(by_added)}× ({_f(by_total)}×) | {'yes' if by_added <= 1.2 else 'no'} |"
            )
    return "\n".join(lines)


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    scorer = (
        f"the shipped ONNX classifier, model {report.get('model')}"
        if report["scorer"] == "onnx"
        else "the KeywordScorer (NOT the real model)"
    )
    head = [
        f"Measured {report['started']} to {report['finished']} on {m['cpu']}, {m['cores']} cores "
        f"(load average at start {', '.join(_f(x) for x in m['load_average'])}), Python "
        f"{m['python']}, {m.get('nginx', '')}, {m.get('wrk', '').split(' [')[0]}, LiteLLM "
        f"{m.get('litellm', 'n/a')}. Guard classifier: {scorer}, started with "
        f"`{report.get('guard_launcher', 'python3 -m guard serve')}`.",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Medians over {report['repeats']} repeats of {report['duration_s']} s per wrk run; "
        "added = median of same-repeat differences against direct.",
    ]
    first_ms = report.get("chunking", {}).get("first_ms", 0)
    if first_ms:
        head[-1] += (
            f" The fake upstream waits {_f(first_ms, 0)} ms before answering (a model's time to "
            "its first token), so direct's latency includes it."
        )
    sections = [("Targets", targets_check)]
    sections += [
        (title, fn)
        for key, title, fn in [
            (
                "latency",
                "Non-streaming latency (POST /v1/chat/completions, 64-token turn)",
                latency_table,
            ),
            ("latency", "Maximum requests per second", rps_table),
            ("hop", "Pass-through hop (GET /v1/models, issue 2)", hop_table),
            ("stream", "Streaming", stream_table),
            ("turns", "Cost against conversation length (guard in enforce mode)", turns_table),
            ("memory", "Memory", memory_table),
            (
                "guard_counters",
                "What the guards decided during these runs (their /metrics)",
                guard_counters_table,
            ),
        ]
        if key in report
    ]
    body = "\n".join(head)
    for title, fn in sections:
        body += f"\n\n#### {title}\n\n{fn(report)}"
    return body + "\n"


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "latency" in report:
        groups = _by(report["latency"], "target", "concurrency")
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        for target in dict.fromkeys(t for t, _ in groups):
            cs = sorted(c for t, c in groups if t == target)
            left.plot(
                cs,
                [median(r["p50_ms"] for r in groups[(target, c)]) for c in cs],
                marker="o",
                label=target,
            )
        left.set(
            xscale="log",
            yscale="log",
            xlabel="concurrency",
            ylabel="p50 ms",
            title="Non-streaming p50 latency",
        )
        left.set_xticks(report["concurrency"], [str(c) for c in report["concurrency"]])
        left.legend(fontsize=7)
        best = max_rps(report)
        names = sorted(best, key=lambda t: -best[t][0])
        right.barh(names, [best[t][0] for t in names])
        right.set(
            xscale="log",
            xlabel="req/s (median, best concurrency; log scale)",
            title="Maximum requests per second",
        )
        right.invert_yaxis()
        fig.tight_layout()
        written.append(out / "latency_throughput.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    if "turns" in report:
        costs = turn_costs(report)
        fig, ax = plt.subplots(figsize=(6, 4))
        turns = list(costs)
        ax.plot(turns, [costs[t][2] for t in turns], marker="o", label="added by the guard")
        ax.plot(turns, [costs[t][1] for t in turns], marker="s", label="direct (upstream)")
        ax.set(
            xscale="log",
            xlabel="turn (history carried)",
            ylabel="p50 ms",
            title="Cost against conversation length",
        )
        ax.set_xticks(turns, [str(t) for t in turns])
        ax.legend()
        fig.tight_layout()
        written.append(out / "conversation_length.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path)
    parser.add_argument(
        "--img", type=Path, help="plot folder (default benchmarks/img for the gateways block only)"
    )
    parser.add_argument("--readme", type=Path, help="rewrite a block of this file")
    parser.add_argument("--block", default="gateways", help="which <!-- NAME:begin --> block")
    args = parser.parse_args()
    report = json.loads(args.result.read_text())
    text = render(report)
    print(text)
    img = args.img or (Path("benchmarks/img") if args.block == "gateways" else None)
    for path in plots(report, img) if img else []:
        print(f"plot: {path}", file=sys.stderr)
    if args.readme:
        update_block(args.readme, args.block, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
