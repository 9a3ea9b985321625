"""What the guard's hop costs (issue 2): added latency over a direct call, nginx as the floor.

A thin entry point on the benchmark harness (:mod:`benchmarks.gateways`): the fake
upstream, nginx and the guard in enforce mode with the zero-cost KeywordScorer (so this
measures the hop, the engine, memory and policies, not a model), driven by wrk at
concurrency 1 and 32 for a pass-through ``GET /v1/models`` and a judged chat completion.
The same tables with the real classifier and the other gateways: ``benchmarks.gateways``.

    python3 benchmarks/proxy_hop.py --duration 3 --rounds 3 --out benchmarks/results/proxy_hop.json

``--client native|httpx|both`` picks the guard's upstream client (default both, side by side).

Needs ``wrk`` and ``nginx`` (Debian: ``apt-get install wrk nginx-light``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import gateways, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats per target")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/proxy_hop.json"))
    parser.add_argument(
        "--client", choices=("native", "httpx", "both"), default="both",
        help="the guard's upstream client (upstream.client); both: side by side",
    )  # fmt: skip
    args = parser.parse_args()
    guards = {"native": ["guard-enforce"], "httpx": ["guard-enforce-httpx"]}
    chosen = guards["native"] + guards["httpx"] if args.client == "both" else guards[args.client]
    status = gateways.main([
        "--scorer", "keyword", "--targets", ",".join(["direct", "nginx", *chosen]),
        "--tables", "latency,hop", "--concurrency", "1,32",
        "--repeats", str(args.rounds), "--duration", str(args.duration), "--out", str(args.out),
    ])  # fmt: skip
    print(report.render(json.loads(args.out.read_text())))
    return status


if __name__ == "__main__":
    sys.exit(main())
