"""``OnnxScorer``: the shipped model behind the async :class:`guard.scoring.Scorer` API.

Concurrent calls are micro-batched: a call's texts join a pending queue per stage
(prompt / reply).  While an inference thread is free the queue is flushed at once (after
``batch_wait_ms``, 0 by default: the texts submitted in the same event-loop turn go
together), so a lone request never waits for company; while every thread is busy the
queue grows and is flushed as one run when a thread frees up, or as soon as it holds
``max_batch`` texts.  Load makes the batches, not a timer.  Inference runs on a small
thread pool, never on the event loop, and each call waits at most ``timeout_s``.

A run that starts while no other is in flight may take the *idle lane*: the
transformer's sessions opened a second time with more intra-op threads
(``classifier.idle_intra_op_threads``), so a lone request uses the cores that concurrent
runs share under load.  Under load every run keeps one thread each, as before, so
throughput does not pay for the idle lane's thread hand-offs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog

from guard.classifier.labels import Labels
from guard.classifier.predictor import Predictor
from guard.classifier.session import LoadedModel, load_model, widened
from guard.errors import ScoringError, ScoringTimeout
from guard.metrics import GuardMetrics
from guard.scoring import HarmScore, ReplyInput, ReplyScore
from guard.settings import ClassifierSettings

log = structlog.get_logger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(slots=True)
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]


@dataclass(slots=True)
class _InFlight:
    """Inference runs in flight across the scorer's batchers (event loop only: no lock)."""

    runs: int = 0


@dataclass(slots=True)
class _Batcher(Generic[In, Out]):
    """Collects items from concurrent callers and scores them together."""

    stage: str
    score: Callable[[list[In]], list[Out]]
    executor: ThreadPoolExecutor
    workers: int
    max_batch: int
    wait_s: float
    metrics: GuardMetrics | None
    # The idle lane: taken by a run that starts while no other is in flight.
    idle_score: Callable[[list[In]], list[Out]] | None = None
    in_flight: _InFlight = field(default_factory=_InFlight)
    pending: list[_Pending[In, Out]] = field(default_factory=list)
    timer: asyncio.Handle | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def submit(self, items: Sequence[In]) -> list[asyncio.Future[Out]]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Out]] = []
        for item in items:
            future: asyncio.Future[Out] = loop.create_future()
            self.pending.append(_Pending(item, future))
            futures.append(future)
        while len(self.pending) >= self.max_batch:
            self._flush_now()
        self._schedule()
        return futures

    def _schedule(self) -> None:
        """Arrange a flush if texts wait and a thread is free (else a finishing run flushes)."""
        if not self.pending or self.timer is not None or len(self.tasks) >= self.workers:
            return
        loop = asyncio.get_running_loop()
        if self.wait_s > 0:
            self.timer = loop.call_later(self.wait_s, self._flush_now)
        else:
            self.timer = loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        taken, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
        taken = [p for p in taken if not p.future.cancelled()]
        if taken:
            task = asyncio.get_running_loop().create_task(self._run(taken))
            self.tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._schedule()

    async def _run(self, batch: list[_Pending[In, Out]]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        self.in_flight.runs += 1
        idle_score = self.idle_score if self.in_flight.runs == 1 else None
        score = idle_score or self.score
        try:
            results = await loop.run_in_executor(self.executor, score, [p.item for p in batch])
        except ScoringError as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        except Exception as exc:  # anything else is a scoring failure too
            error = ScoringError(f"{self.stage} scoring failed: {type(exc).__name__}")
            error.__cause__ = exc
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        finally:
            self.in_flight.runs -= 1
        if self.metrics is not None:
            self.metrics.classifier_duration.labels(stage=self.stage).observe(
                time.perf_counter() - started
            )
            self.metrics.classifier_batch_size.observe(len(batch))
            lane = "busy" if idle_score is None else "idle"
            self.metrics.classifier_runs.labels(stage=self.stage, lane=lane).inc()
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for pending in self.pending:
            pending.future.cancel()
        self.pending.clear()


def _widens(model: LoadedModel, settings: ClassifierSettings) -> bool:
    """Whether an idle lane can be faster: more threads than a busy run gets, on CPU
    (a GPU run does not scale with host threads)."""
    busy = settings.intra_op_threads
    return (
        busy > 0
        and settings.idle_intra_op_threads > busy
        and "CUDAExecutionProvider" not in model.providers
    )


class OnnxScorer:
    """The ONNX classifier as a :class:`guard.scoring.Scorer`."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        inference_threads: int = 2,
        max_batch: int = 16,
        batch_wait_ms: float = 0.0,
        timeout_s: float = 2.0,
        metrics: GuardMetrics | None = None,
        idle_model: LoadedModel | None = None,
    ) -> None:
        """``idle_model``: the same model with wider sessions (:func:`widened`), taken by
        runs that start while no other run is in flight."""
        self.model = model
        self.idle_model = idle_model
        on_confirm = (
            None
            if metrics is None
            else lambda kind: metrics.classifier_confirmations.labels(kind=kind).inc()
        )
        self.predictor = Predictor(model, on_confirm=on_confirm)
        idle = None if idle_model is None else Predictor(idle_model, on_confirm=on_confirm)
        in_flight = _InFlight()
        self._executor = ThreadPoolExecutor(
            max_workers=inference_threads, thread_name_prefix="guard-classifier"
        )
        self._timeout_s = timeout_s
        wait_s = batch_wait_ms / 1000.0
        self._prompts: _Batcher[str, HarmScore] = _Batcher(
            "prompt",
            self.predictor.score_prompts,
            self._executor,
            inference_threads,
            max_batch,
            wait_s,
            metrics,
            None if idle is None else idle.score_prompts,
            in_flight,
        )
        self._replies: _Batcher[ReplyInput, ReplyScore] = _Batcher(
            "reply",
            self.predictor.score_replies,
            self._executor,
            inference_threads,
            max_batch,
            wait_s,
            metrics,
            None if idle is None else idle.score_replies,
            in_flight,
        )
        self._metrics = metrics
        self._closed = False

    @classmethod
    def from_settings(
        cls, settings: ClassifierSettings, metrics: GuardMetrics | None = None
    ) -> OnnxScorer:
        """Load the model eagerly (raises :class:`ModelLoadError`) and build the scorer."""
        model = load_model(
            settings.model_dir,
            provider=settings.provider,
            intra_op_threads=settings.intra_op_threads,
            sieve=settings.sieve,
            early_exit=settings.early_exit,
        )
        idle_model = None
        if _widens(model, settings):
            idle_model = widened(model, settings.provider, settings.idle_intra_op_threads)
        log.info(
            "classifier_loaded",
            model=str(model.model_path),
            version=model.labels.model_version,
            sha256=model.labels.model_sha256[:12],
            providers=list(model.providers),
            sieve=model.sieve.labels.model_sha256[:12] if model.sieve else None,
            early_exit=model.exit.labels.model_sha256[:12] if model.exit else None,
            idle_intra_op_threads=settings.idle_intra_op_threads if idle_model else None,
        )
        return cls(
            model,
            inference_threads=settings.inference_threads,
            max_batch=settings.max_batch,
            batch_wait_ms=settings.batch_wait_ms,
            timeout_s=settings.timeout_s,
            metrics=metrics,
            idle_model=idle_model,
        )

    @property
    def labels(self) -> Labels:
        return self.model.labels

    async def _gather(self, stage: str, futures: list[asyncio.Future[Out]]) -> list[Out]:
        if self._closed:
            raise ScoringError("scorer is closed")
        try:
            async with asyncio.timeout(self._timeout_s):
                return list(await asyncio.gather(*futures))
        except TimeoutError as exc:
            for future in futures:
                future.cancel()
            raise ScoringTimeout(f"{stage} scoring took longer than {self._timeout_s}s") from exc

    async def score_prompts(self, texts: Sequence[str]) -> list[HarmScore]:
        if not texts:
            return []
        scores = await self._gather("prompt", self._prompts.submit(texts))
        if self._metrics is not None:
            for score in scores:
                self._metrics.cascade_texts.labels(stage=score.stage.value).inc()
        return scores

    async def score_replies(self, replies: Sequence[ReplyInput]) -> list[ReplyScore]:
        if not replies:
            return []
        return await self._gather("reply", self._replies.submit(replies))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._prompts.cancel()
        self._replies.cancel()
        running = [*self._prompts.tasks, *self._replies.tasks]
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
