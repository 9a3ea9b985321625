"""Micro-batching in the scorer: load makes the batches, a lone request never waits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from guard.classifier.scorer import _Batcher


class Recorder:
    """A scoring function that records batch sizes and can be held busy."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()

    def __call__(self, items: list[str]) -> list[str]:
        self.sizes.append(len(items))
        self.started.set()
        self.release.wait(timeout=10)
        return [item.upper() for item in items]


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=True)


def batcher(
    recorder: Recorder, executor: ThreadPoolExecutor, wait_s: float = 0.0
) -> _Batcher[str, str]:
    return _Batcher("prompt", recorder, executor, 1, 16, wait_s, None)


async def test_a_lone_text_runs_at_once_not_after_a_timer(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    # A wait of 10 s would time the test out if the lone text waited for company.
    (future,) = batcher(recorder, executor).submit(["a"])
    assert await asyncio.wait_for(future, timeout=5) == "A"
    assert recorder.sizes == [1]


async def test_texts_arriving_while_busy_go_together_when_a_thread_frees(
    executor: ThreadPoolExecutor,
) -> None:
    recorder = Recorder()
    recorder.release.clear()
    queue = batcher(recorder, executor)
    first = queue.submit(["a"])
    await asyncio.to_thread(recorder.started.wait, 5)  # the first run holds the only thread
    later = [future for text in "bcdef" for future in queue.submit([text])]
    await asyncio.sleep(0.05)
    assert recorder.sizes == [1]  # nothing else ran while the thread was busy
    recorder.release.set()
    results = await asyncio.wait_for(asyncio.gather(*first, *later), timeout=5)
    assert results == ["A", "B", "C", "D", "E", "F"]
    assert recorder.sizes == [1, 5]


async def test_a_full_batch_is_flushed_without_waiting_for_a_thread(
    executor: ThreadPoolExecutor,
) -> None:
    recorder = Recorder()
    queue = _Batcher("prompt", recorder, executor, 1, 4, 0.0, None)
    futures = queue.submit(list("abcdefghij"))
    assert await asyncio.wait_for(asyncio.gather(*futures), timeout=5) == list("ABCDEFGHIJ")
    assert sorted(recorder.sizes) == [2, 4, 4]


async def test_a_run_takes_the_idle_lane_only_while_no_other_runs() -> None:
    busy, idle = Recorder(), Recorder()
    idle.release.clear()
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        queue = _Batcher("prompt", busy, pool, 2, 16, 0.0, None, idle_score=idle)
        first = queue.submit(["a"])
        await asyncio.to_thread(idle.started.wait, 5)  # the lone run took the idle lane
        second = queue.submit(["b"])  # starts beside it, on the other thread
        assert await asyncio.wait_for(asyncio.gather(*second), timeout=5) == ["B"]
        assert (busy.sizes, idle.sizes) == ([1], [1])
        idle.release.set()
        assert await asyncio.wait_for(asyncio.gather(*first), timeout=5) == ["A"]
        third = queue.submit(["c"])  # nothing in flight again
        assert await asyncio.wait_for(asyncio.gather(*third), timeout=5) == ["C"]
        assert (busy.sizes, idle.sizes) == ([1], [1, 1])
    finally:
        pool.shutdown(wait=True)


async def test_a_failed_idle_run_leaves_the_lane_free() -> None:
    def broken(items: list[str]) -> list[str]:
        raise RuntimeError("boom")

    busy = Recorder()
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        queue = _Batcher("prompt", busy, pool, 1, 16, 0.0, None, idle_score=broken)
        (failed,) = queue.submit(["a"])
        with pytest.raises(Exception, match="prompt scoring failed"):
            await asyncio.wait_for(failed, timeout=5)
        assert queue.in_flight.runs == 0
    finally:
        pool.shutdown(wait=True)
