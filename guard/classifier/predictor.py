"""Synchronous scoring with a loaded model: encode, run, combine windows.

The async :class:`guard.classifier.scorer.OnnxScorer` calls this from worker threads;
training (threshold tuning) and evaluation call it directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from guard.classifier.encoding import Batch, IntArray, Window
from guard.classifier.labels import CONFIRM_BAND, CONFIRM_REPLY_MARGIN
from guard.classifier.session import MASK_INPUT, LoadedModel
from guard.classifier.sieve import MAX_CLEARABLE_TOKENS
from guard.errors import ScoringError
from guard.scoring import HAZARDS, HarmScore, Refusal, ReplyInput, ReplyScore, Stage

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
StageArray = npt.NDArray[np.object_]  # Stage values per window or text
_REFUSALS = tuple(Refusal)


def _sigmoid(x: FloatArray) -> FloatArray:
    result: FloatArray = (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    return result


def _softmax(x: FloatArray) -> FloatArray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    result: FloatArray = shifted / shifted.sum(axis=-1, keepdims=True)
    return result


@dataclass(frozen=True, slots=True)
class RawOutputs:
    """Logits for a list of windows."""

    harm: FloatArray
    refusal: FloatArray


@dataclass(frozen=True, slots=True)
class Screened:
    """Per-text harm probabilities and the :class:`Stage` value that decided each text."""

    probabilities: FloatArray
    stages: StageArray

    @property
    def cleared(self) -> BoolArray:
        """Texts that a cheap stage cleared entirely (the transformer's tail never ran)."""
        result: BoolArray = self.stages != Stage.MODEL.value
        return result


def _deciding_stage(stages: StageArray) -> str:
    """A text is the model's if any window reached the tail, else the latest cheap stage's."""
    values = set(stages.tolist())
    for stage in (Stage.MODEL, Stage.EXIT, Stage.SIEVE):
        if stage.value in values:
            return stage.value
    return Stage.MODEL.value


class Predictor:
    """Scores texts and replies with one :class:`LoadedModel`; safe to call from threads."""

    def __init__(
        self,
        model: LoadedModel,
        max_windows_per_run: int = 64,
        *,
        confirm_alone: bool = True,
        on_confirm: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self._chunk = max_windows_per_run
        self._sieve_chunk = 4 * max_windows_per_run
        # Off only to measure what batching does to scores (benchmarks/batch_noise.py).
        self.confirm_alone = confirm_alone
        # Called with "prompt" or "reply" for each text scored again alone (metrics).
        self._on_confirm = on_confirm

    def _confirmed(self, kind: str) -> None:
        if self._on_confirm is not None:
            self._on_confirm(kind)

    def _chunks(self, windows: Sequence[Window], size: int) -> list[list[Window]]:
        # Sorting by length keeps padding small when long and short windows are mixed.
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].ids))
        return [[windows[i] for i in order[s : s + size]] for s in range(0, len(order), size)]

    @staticmethod
    def _inverse(windows: Sequence[Window]) -> npt.NDArray[np.intp]:
        """Undoes :meth:`_chunks`' length sort on the concatenated outputs."""
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].ids))
        inverse: npt.NDArray[np.intp] = np.argsort(np.asarray(order))
        return inverse

    def _feed(self, batch: Batch) -> dict[str, IntArray]:
        return {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }

    def _session_run(
        self, session: ort.InferenceSession, names: list[str], feed: dict[str, Any]
    ) -> list[npt.NDArray[Any]]:
        try:
            outputs = session.run(names, feed)
        except Exception as exc:  # onnxruntime's errors are untyped
            raise ScoringError(f"inference failed: {type(exc).__name__}") from exc
        return [np.asarray(output) for output in outputs]

    def _front(self, batch: Batch) -> list[npt.NDArray[Any]]:
        """The split model's front outputs that its tail takes (``model.handoff``)."""
        return self._session_run(self.model.session, list(self.model.handoff), self._feed(batch))

    def _tail(self, front: list[npt.NDArray[Any]], mask: IntArray) -> list[FloatArray]:
        assert self.model.tail is not None
        feed: dict[str, Any] = dict(zip(self.model.handoff, front, strict=True))
        feed[MASK_INPUT] = mask
        return self._session_run(self.model.tail, ["harm", "refusal"], feed)

    def _logits(self, batch: Batch) -> list[FloatArray]:
        """[harm, refusal] logits of the whole transformer (front and tail when split)."""
        if self.model.tail is None:
            return self._session_run(self.model.session, ["harm", "refusal"], self._feed(batch))
        return self._tail(self._front(batch), batch.attention_mask)

    def run(self, windows: Sequence[Window]) -> RawOutputs:
        """Model logits for windows, run in chunks; onnxruntime errors -> ScoringError."""
        harm_parts, refusal_parts = [], []
        for chunk in self._chunks(windows, self._chunk):
            harm, refusal = self._logits(self.model.encoder.batch(chunk))
            harm_parts.append(harm)
            refusal_parts.append(refusal)
        inverse = self._inverse(windows)
        return RawOutputs(
            harm=np.concatenate(harm_parts)[inverse], refusal=np.concatenate(refusal_parts)[inverse]
        )

    def harm_probabilities(self, texts: Sequence[str]) -> FloatArray:
        """[len(texts), 1 + len(HAZARDS)] probabilities, max over each text's windows."""
        return self.harm_screened(texts).probabilities

    def harm_screened(self, texts: Sequence[str]) -> Screened:
        """Harm probabilities per text, and the cascade stage that decided each text.

        Texts are scored together, and those whose risk lands near a decision point
        (:data:`~guard.classifier.labels.CONFIRM_BAND`) once more on their own, so every
        text that a decision could hinge on gets the score it gets alone, whatever it was
        batched with.
        """
        screened = self._screened(texts)
        if len(texts) < 2 or not self.confirm_alone:
            return screened
        calibrate = self.model.labels.calibrate
        low, high = CONFIRM_BAND
        for row, risk in enumerate(screened.probabilities[:, 0]):
            if low <= calibrate(float(risk)) <= high:
                alone = self._screened([texts[row]])
                screened.probabilities[row] = alone.probabilities[0]
                screened.stages[row] = alone.stages[0]
                self._confirmed("prompt")
        return screened

    def _screened(self, texts: Sequence[str]) -> Screened:
        if not texts:
            return Screened(np.zeros((0, 1 + len(HAZARDS)), np.float32), np.zeros(0, object))
        per_text = self.model.encoder.text_windows(texts)
        flat = [window for windows in per_text for window in windows]
        probabilities, stages = self._window_probabilities(flat)
        result = np.empty((len(texts), probabilities.shape[1]), dtype=np.float32)
        decided = np.empty(len(texts), dtype=object)
        start = 0
        for row, windows in enumerate(per_text):
            end = start + len(windows)
            result[row] = probabilities[start:end].max(axis=0)
            decided[row] = _deciding_stage(stages[start:end])
            start = end
        return Screened(result, decided)

    def _transformer_harm(
        self, batch: Batch, sieve_agrees: BoolArray
    ) -> tuple[FloatArray, BoolArray]:
        """Harm probabilities of one batch; rows the early exit clears (where the sieve
        agrees) skip the tail."""
        early_exit = self.model.exit
        if early_exit is None:
            return _sigmoid(self._logits(batch)[0]), np.zeros(len(batch), np.bool_)
        front = self._front(batch)
        if not sieve_agrees.any():  # nothing here can be cleared: the exit head is moot
            return _sigmoid(self._tail(front, batch.attention_mask)[0]), sieve_agrees
        early = early_exit.hidden_probabilities(front[0], batch.attention_mask)
        lengths = batch.attention_mask.sum(axis=1) - 2
        cleared = early_exit.cleared(early, lengths) & sieve_agrees
        result = early_exit.reported(early, self.model.labels.thresholds.flag)
        rest = ~cleared
        if rest.any():
            harm, _ = self._tail([part[rest] for part in front], batch.attention_mask[rest])
            result[rest] = _sigmoid(harm)
        return result, cleared

    def _window_probabilities(self, windows: list[Window]) -> tuple[FloatArray, StageArray]:
        """Harm probabilities per window and the stage that decided each one.

        A window is cleared only when every loaded cheap stage clears it: the sieve alone
        when there is no early exit, else the sieve *and* the early exit (two different
        models must both find it plainly benign; either one alone lets through harm the
        other catches).  Everything else gets the whole transformer.
        """
        flag = self.model.labels.thresholds.flag
        result = np.zeros((len(windows), 1 + len(HAZARDS)), np.float32)
        stage = np.full(len(windows), Stage.MODEL.value, dtype=object)
        agrees = np.ones(len(windows), np.bool_)
        forward = np.arange(len(windows))
        sieve = self.model.sieve
        if sieve is not None:
            # Only short windows can be cleared; a longer one skips the cheap stages.
            lengths = np.array([len(window.ids) - 2 for window in windows])
            short = np.flatnonzero(lengths <= MAX_CLEARABLE_TOKENS)
            screened = np.ones((len(windows), 1 + len(HAZARDS)), np.float32)
            if len(short):
                candidates = [windows[i] for i in short]
                screened[short] = np.concatenate(
                    [
                        sieve.window_probabilities(chunk, self.model.encoder)
                        for chunk in self._chunks(candidates, self._sieve_chunk)
                    ]
                )[self._inverse(candidates)]
            agrees = sieve.cleared(screened, lengths)
            if self.model.exit is None:
                result[agrees] = sieve.reported(screened[agrees], flag)
                stage[agrees] = Stage.SIEVE.value
                forward = np.flatnonzero(~agrees)
        if not len(forward):
            return result, stage
        rest = [windows[i] for i in forward]
        order = sorted(range(len(rest)), key=lambda i: len(rest[i].ids))
        for start in range(0, len(order), self._chunk):
            rows = order[start : start + self._chunk]
            targets = forward[rows]
            harm, exited = self._transformer_harm(
                self.model.encoder.batch([rest[i] for i in rows]), agrees[targets]
            )
            result[targets] = harm
            stage[targets[exited]] = Stage.EXIT.value
        return result, stage

    def refusal_probabilities(self, replies: Sequence[ReplyInput]) -> FloatArray:
        """[len(replies), 4] probabilities in Refusal order.

        As for harm, a reply whose two likeliest types are close
        (:data:`~guard.classifier.labels.CONFIRM_REPLY_MARGIN`) is scored again alone.
        """
        probabilities = self._refusal_probabilities(replies)
        if len(replies) < 2 or not self.confirm_alone:
            return probabilities
        top2 = np.sort(np.log(probabilities + 1e-9), axis=1)[:, -2:]
        for row in np.flatnonzero(top2[:, 1] - top2[:, 0] < CONFIRM_REPLY_MARGIN):
            probabilities[row] = self._refusal_probabilities([replies[int(row)]])[0]
            self._confirmed("reply")
        return probabilities

    def _refusal_probabilities(self, replies: Sequence[ReplyInput]) -> FloatArray:
        if not replies:
            return np.zeros((0, len(_REFUSALS)), dtype=np.float32)
        windows = self.model.encoder.reply_windows(
            [reply.prompt for reply in replies], [reply.reply for reply in replies]
        )
        return _softmax(self.run(windows).refusal)

    def score_prompts(self, texts: Sequence[str]) -> list[HarmScore]:
        """Harm scores with ``risk`` calibrated to the policies' scale (see Labels.calibrate)."""
        screened = self.harm_screened(texts)
        return [
            HarmScore(
                risk=self.model.labels.calibrate(float(row[0])),
                categories={name: float(p) for name, p in zip(HAZARDS, row[1:], strict=True)},
                stage=Stage(stage),
            )
            for row, stage in zip(screened.probabilities, screened.stages, strict=True)
        ]

    def score_replies(self, replies: Sequence[ReplyInput]) -> list[ReplyScore]:
        return [
            ReplyScore(
                refusal=_REFUSALS[int(row.argmax())],
                probabilities={r: float(p) for r, p in zip(_REFUSALS, row, strict=True)},
            )
            for row in self.refusal_probabilities(replies)
        ]
