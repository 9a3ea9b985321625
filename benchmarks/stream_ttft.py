"""Time to first token added by the guard to streamed replies.

The upstream is the demo's scripted model, streaming one word every ``--token-ms``
(a real model's pace); the guard (HTTP sidecar, engine, shipped policies, enforce
mode) runs in front of it on 127.0.0.1.  For each kind of reply, time to the first
content chunk is measured with the openai client straight from the upstream and
through the guard, alternating, ``--runs`` times each; the report gives medians and
the difference.  What the guard adds is the hold-back (words until the first
sentence ends, times the token interval) plus its own decision time; the scorer here
is the keyword scorer, so the classifier's inference time (measured by the classifier
benchmarks) comes on top for held streams.

    python3 -m benchmarks.stream_ttft --runs 30 --token-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass

import structlog
from openai import AsyncOpenAI
from prometheus_client import CollectorRegistry

from guard.decisions import Mode
from guard.demo import SCRIPTED_MODEL, Scene, ScriptedModel, serve_app
from guard.engine import Engine
from guard.metrics import GuardMetrics
from guard.proxy import create_app
from guard.settings import load_settings
from guard.testing import KeywordScorer

CASES: tuple[Scene, ...] = (
    Scene("benign: no hold", "What is the capital of France?",
          "Paris is the capital of France, and it sits on the Seine.", True, ""),
    Scene("flagged request, compliant reply: held for the first sentence",
          "Is lock picking legal where I live?",
          "In most places owning picks is legal, but using them on locks you don't own is "
          "not. Check your local law before you practise.", True, ""),
    Scene("flagged request, bare refusal: replaced",
          "Tell me about lock picking on my neighbour's door.",
          "I'm sorry, I can't help with that.", True, ""),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Result:
    case: str
    words_in_first_sentence: int
    direct_ttft_ms: float
    guarded_ttft_ms: float
    added_ms: float


async def _ttft(client: AsyncOpenAI, prompt: str) -> float:
    started = time.perf_counter()
    stream = await client.chat.completions.create(
        model=SCRIPTED_MODEL, messages=[{"role": "user", "content": prompt}], stream=True
    )
    first = None
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    assert first is not None, "no content chunk arrived"
    return first * 1000.0


async def measure(runs: int, token_ms: float) -> list[Result]:
    model = ScriptedModel(CASES, token_delay_s=token_ms / 1000.0)
    metrics = GuardMetrics(CollectorRegistry())
    engine = Engine(KeywordScorer(), mode=Mode.ENFORCE, metrics=metrics)
    results = []
    async with serve_app(model.app) as upstream_url:
        settings = load_settings(overrides={"upstream": {"url": upstream_url}}, environ={})
        async with serve_app(create_app(settings, engine=engine, metrics=metrics)) as guard_url:
            direct = AsyncOpenAI(base_url=f"{upstream_url}/v1", api_key="x", max_retries=0)
            guarded = AsyncOpenAI(base_url=f"{guard_url}/v1", api_key="x", max_retries=0)
            for case in CASES:
                plain, through = [], []
                for _ in range(runs):
                    plain.append(await _ttft(direct, case.prompt))
                    through.append(await _ttft(guarded, case.prompt))
                first_sentence = case.scripted.split(".")[0]
                results.append(Result(
                    case.title, len(first_sentence.split(" ")),
                    round(statistics.median(plain), 2), round(statistics.median(through), 2),
                    round(statistics.median(through) - statistics.median(plain), 2),
                ))  # fmt: skip
            await direct.close()
            await guarded.close()
    await engine.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--token-ms", type=float, default=20.0)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    results = asyncio.run(measure(args.runs, args.token_ms))
    print(json.dumps({"runs": args.runs, "token_ms": args.token_ms,
                      "results": [asdict(r) for r in results]}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
