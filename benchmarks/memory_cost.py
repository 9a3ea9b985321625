"""What conversation memory costs: judge() latency as histories grow, and resident memory.

Latency: for each turn N in --turns, --conversations conversations (a quarter of them
past turn 50) are driven through the guard up to turn N-1 (judge, then record the
relayed reply: the warm-up), then the request of turn N, carrying the whole history as
clients send it, is timed.  Rounds interleave the turns against load drift.  During
the warm-up a keyword scorer stands in for the configured one so that long histories
do not take minutes of inference; the timed request scores its new texts with the
configured scorer (``--scorer onnx`` for the real model).  In-memory store.

Memory: resident size of 100,000 conversations in the in-memory store, each the state of
a 10-turn conversation, measured with tracemalloc (Python allocations) and as the
process's RSS growth; plus the per-message score cache at its default bound.

    python3 -m benchmarks.memory_cost --scorer keyword
    python3 -m benchmarks.memory_cost --scorer onnx --model-dir models

The conversations are benign and never refused, so under the shipped policy
(``--no-joint-decisive``, the default) the joint text is never scored; with
``--joint-decisive`` it is scored on every turn from turn 2, as under
``split_intent: joint`` or ``memory.joint_scoring: always``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

from benchmarks.multiturn_eval import make_scorer
from guard.conversation import Conversation, Message
from guard.decisions import GuardRequest
from guard.memory import ConversationMemory
from guard.memory.escalation import EscalationConfig
from guard.memory.identity import Keyring
from guard.memory.memory_store import MemoryStore
from guard.memory.score_cache import ScoreCache
from guard.memory.state import ConversationState
from guard.scoring import HarmScore, ReplyInput, ReplyScore, Scorer
from guard.settings import MemorySettings
from guard.testing import KeywordScorer

USER = (
    "Turn {t} of conversation {c}: could you explain in a few paragraphs how the water cycle "
    "shapes regional climate, and what changes when forests are cleared nearby?"
)
REPLY = (
    "Reply {t} to conversation {c}. " + "Evaporation, condensation and precipitation move heat "
    "and water between oceans, air and land; forests recycle moisture inland. " * 6
)


class SwitchScorer:
    """Delegates to a cheap scorer during warm-up and to the measured one when timed."""

    def __init__(self, measured: Scorer) -> None:
        self.measured = measured
        self.warmup: Scorer = KeywordScorer()
        self.timing = False

    async def score_prompts(self, texts: Sequence[str]) -> list[HarmScore]:
        return await (self.measured if self.timing else self.warmup).score_prompts(texts)

    async def score_replies(self, replies: Sequence[ReplyInput]) -> list[ReplyScore]:
        return await self.measured.score_replies(replies)

    async def aclose(self) -> None:
        await self.measured.aclose()


def _request(conversation: int, messages: list[Message]) -> GuardRequest:
    return GuardRequest(
        request_id="bench",
        conversation=Conversation(tuple(messages)),
        tenant="bench-tenant",
        conversation_id=f"conv-{conversation}",
    )


async def latency_at(
    memory: ConversationMemory,
    scorer: SwitchScorer,
    turn: int,
    count: int,
    offset: int,
    *,
    joint_decisive: bool = False,
) -> list[float]:
    samples = []
    for c in range(offset, offset + count):
        history: list[Message] = [Message("system", "You are a helpful assistant.")]
        for t in range(1, turn):
            history.append(Message("user", USER.format(t=t, c=c)))
            judgement = await memory.judge(_request(c, history), joint_decisive=joint_decisive)
            reply = REPLY.format(t=t, c=c)
            await memory.record(
                judgement, relayed=reply, refusal=None, category=None, blocked=False
            )
            history.append(Message("assistant", reply))
        history.append(Message("user", USER.format(t=turn, c=c)))
        request = _request(c, history)
        scorer.timing = True
        started = time.perf_counter()
        await memory.judge(request, joint_decisive=joint_decisive)
        samples.append(time.perf_counter() - started)
        scorer.timing = False
    return samples


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


async def _fill(store: MemoryStore, keyring: Keyring, conversations: int) -> None:
    tenant = keyring.digest("tenant", "bench-tenant")
    for c in range(conversations):
        key = f"{tenant}:{keyring.digest('conversation-id', tenant, f'conv-{c}')}"
        state = ConversationState(
            user_turns=10,
            relayed=tuple(keyring.text(REPLY.format(t=t, c=c)) for t in range(1, 10)),
            peak_risk=0.12, peak_turn=7, peak_category="privacy", updated_at=time.time(),
        )  # fmt: skip
        await store.put(key, state)


async def resident_memory(conversations: int) -> dict[str, float]:
    settings = MemorySettings()
    keyring = Keyring(b"memory-cost-benchmark-key")

    def new_store() -> MemoryStore:
        return MemoryStore(
            ttl_s=settings.ttl_s,
            max_conversations=max(conversations, 1),
            max_bytes=settings.max_bytes,
        )

    # RSS first, without tracemalloc (whose own bookkeeping would inflate it).
    gc.collect()
    rss_before = _rss_bytes()
    store = new_store()
    await _fill(store, keyring, conversations)
    gc.collect()
    store_rss = _rss_bytes() - rss_before
    accounted = store.approx_bytes
    await store.aclose()
    del store
    gc.collect()
    tracemalloc.start()
    store = new_store()
    await _fill(store, keyring, conversations)
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    held = len(store)
    await store.aclose()
    cache = ScoreCache(settings.score_cache_entries)
    tracemalloc.start()
    score = HarmScore.benign()
    for i in range(settings.score_cache_entries):
        cache.put(keyring.prompt(f"message {i}"), score)
    cache_traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "conversations": held,
        "store_traced_bytes": traced,
        "store_rss_growth_bytes": store_rss,
        "store_accounted_bytes": accounted,
        "cache_entries": len(cache),
        "cache_traced_bytes": cache_traced,
    }


async def main_async(args: argparse.Namespace) -> None:
    scorer = SwitchScorer(make_scorer(args.scorer, args.model_dir))
    store = MemoryStore(ttl_s=86_400, max_conversations=1_000_000, max_bytes=1 << 31)
    memory = ConversationMemory(
        scorer,
        store,
        Keyring(b"memory-cost-benchmark-key"),
        config=EscalationConfig(joint_turns=args.joint_turns, joint_chars=args.joint_chars),
    )
    try:
        # One untimed conversation first: imports, allocator and model warm-up.
        await latency_at(memory, scorer, 3, 2, offset=10_000_000)
        print(
            f"## memory_cost: scorer={args.scorer}, joint_turns={args.joint_turns}, "
            f"joint_chars={args.joint_chars}, joint_decisive={args.joint_decisive}, "
            "in-memory store, judge() latency\n"
        )
        print("| turn | conversations | median ms | p90 ms | median / turn 1 |")
        print("|---|---|---|---|---|")
        # Rounds interleave the turns, so load changes on a shared machine hit every
        # turn alike; turns past 50 are sampled every 4th round (their warm-up is long).
        samples: dict[int, list[float]] = {turn: [] for turn in args.turns}
        offset = 0
        for round_ in range(args.conversations):
            for turn in args.turns:
                if turn > 50 and round_ % 4:
                    continue
                samples[turn] += await latency_at(
                    memory, scorer, turn, 1, offset, joint_decisive=args.joint_decisive
                )
                offset += 1
        base = statistics.median(samples[args.turns[0]])
        for turn in args.turns:
            median = statistics.median(samples[turn])
            got = samples[turn]
            p90 = statistics.quantiles(got, n=10)[-1] if len(got) >= 10 else max(got)
            ms = f"{1000 * median:.3f} | {1000 * p90:.3f}"
            print(f"| {turn} | {len(got)} | {ms} | {median / base:.2f} |")
    finally:
        await memory.aclose()
    if args.memory_conversations:
        mem = await resident_memory(args.memory_conversations)
        per = mem["store_traced_bytes"] / max(mem["conversations"], 1)
        print(
            f"\n## resident memory, {int(mem['conversations']):,} conversations (10-turn states)\n"
        )
        print(
            f"- store, tracemalloc: {mem['store_traced_bytes'] / 2**20:.1f} MiB ({per:.0f} B each)"
        )
        print(f"- store, RSS growth: {mem['store_rss_growth_bytes'] / 2**20:.1f} MiB")
        accounted = mem["store_accounted_bytes"] / 2**20
        print(f"- store, own byte accounting (max_bytes): {accounted:.1f} MiB")
        print(
            f"- score cache at its bound ({int(mem['cache_entries']):,} entries): "
            f"{mem['cache_traced_bytes'] / 2**20:.1f} MiB"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scorer", choices=("onnx", "keyword"), default="keyword")
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--turns", type=int, nargs="+", default=[1, 2, 10, 50, 200])
    parser.add_argument("--conversations", type=int, default=100, help="timed requests per turn")
    parser.add_argument("--memory-conversations", type=int, default=100_000)
    parser.add_argument(
        "--joint-turns",
        type=int,
        default=EscalationConfig().joint_turns,
        help="user turns scored jointly (0: joint scoring off, memory.joint_turns)",
    )
    parser.add_argument("--joint-chars", type=int, default=EscalationConfig().joint_chars)
    parser.add_argument(
        "--joint-decisive",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="judge as under a policy the joint text can decide (split_intent: joint): "
        "joint text scored every turn; default: as the engine judges under the shipped "
        "policy (joint text scored once a refusal or block is on record)",
    )
    args = parser.parse_args(argv)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
