"""Synchronous scoring with a loaded model: encode, run, combine windows.

The async :class:`guard.classifier.scorer.OnnxScorer` calls this from worker threads;
training (threshold tuning) and evaluation call it directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from guard.classifier.encoding import Window
from guard.classifier.session import LoadedModel
from guard.errors import ScoringError
from guard.scoring import HAZARDS, HarmScore, Refusal, ReplyInput, ReplyScore

FloatArray = npt.NDArray[np.float32]
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
    """Per-text harm probabilities, and whether the sieve cleared all of a text's windows."""

    probabilities: FloatArray
    sieved: npt.NDArray[np.bool_]


class Predictor:
    """Scores texts and replies with one :class:`LoadedModel`; safe to call from threads."""

    def __init__(self, model: LoadedModel, max_windows_per_run: int = 64) -> None:
        self.model = model
        self._chunk = max_windows_per_run
        self._sieve_chunk = 4 * max_windows_per_run

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

    def run(self, windows: Sequence[Window]) -> RawOutputs:
        """Model logits for windows, run in chunks; onnxruntime errors -> ScoringError."""
        harm_parts, refusal_parts = [], []
        for chunk in self._chunks(windows, self._chunk):
            batch = self.model.encoder.batch(chunk)
            try:
                harm, refusal = self.model.session.run(
                    ["harm", "refusal"],
                    {
                        "input_ids": batch.input_ids,
                        "attention_mask": batch.attention_mask,
                        "token_type_ids": batch.token_type_ids,
                    },
                )
            except Exception as exc:  # onnxruntime's errors are untyped
                raise ScoringError(f"inference failed: {type(exc).__name__}") from exc
            harm_parts.append(np.asarray(harm, dtype=np.float32))
            refusal_parts.append(np.asarray(refusal, dtype=np.float32))
        inverse = self._inverse(windows)
        return RawOutputs(
            harm=np.concatenate(harm_parts)[inverse], refusal=np.concatenate(refusal_parts)[inverse]
        )

    def harm_probabilities(self, texts: Sequence[str]) -> FloatArray:
        """[len(texts), 1 + len(HAZARDS)] probabilities, max over each text's windows."""
        return self.harm_screened(texts).probabilities

    def harm_screened(self, texts: Sequence[str]) -> Screened:
        """Harm probabilities per text, and which texts the sieve cleared entirely."""
        if not texts:
            return Screened(np.zeros((0, 1 + len(HAZARDS)), np.float32), np.zeros(0, np.bool_))
        per_text = self.model.encoder.text_windows(texts)
        flat = [window for windows in per_text for window in windows]
        probabilities, cleared = self._window_probabilities(flat)
        result = np.empty((len(texts), probabilities.shape[1]), dtype=np.float32)
        sieved = np.empty(len(texts), dtype=np.bool_)
        start = 0
        for row, windows in enumerate(per_text):
            end = start + len(windows)
            result[row] = probabilities[start:end].max(axis=0)
            sieved[row] = bool(cleared[start:end].all())
            start = end
        return Screened(result, sieved)

    def _window_probabilities(
        self, windows: list[Window]
    ) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        sieve = self.model.sieve
        if sieve is None:
            return _sigmoid(self.run(windows).harm), np.zeros(len(windows), np.bool_)
        screened = np.concatenate(
            [
                sieve.probabilities(self.model.encoder.batch(chunk))
                for chunk in self._chunks(windows, self._sieve_chunk)
            ]
        )[self._inverse(windows)]
        cleared = sieve.cleared(screened)
        result = sieve.reported(screened, self.model.labels.thresholds.flag)
        forward = np.flatnonzero(~cleared)
        if len(forward):
            result[forward] = _sigmoid(self.run([windows[i] for i in forward]).harm)
        return result, cleared

    def refusal_probabilities(self, replies: Sequence[ReplyInput]) -> FloatArray:
        """[len(replies), 4] probabilities in Refusal order."""
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
                sieved=bool(sieved),
            )
            for row, sieved in zip(screened.probabilities, screened.sieved, strict=True)
        ]

    def score_replies(self, replies: Sequence[ReplyInput]) -> list[ReplyScore]:
        return [
            ReplyScore(
                refusal=_REFUSALS[int(row.argmax())],
                probabilities={r: float(p) for r, p in zip(_REFUSALS, row, strict=True)},
            )
            for row in self.refusal_probabilities(replies)
        ]
