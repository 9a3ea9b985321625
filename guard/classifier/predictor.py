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


class Predictor:
    """Scores texts and replies with one :class:`LoadedModel`; safe to call from threads."""

    def __init__(self, model: LoadedModel, max_windows_per_run: int = 64) -> None:
        self.model = model
        self._chunk = max_windows_per_run

    def run(self, windows: Sequence[Window]) -> RawOutputs:
        """Model logits for windows, run in chunks; onnxruntime errors -> ScoringError."""
        harm_parts, refusal_parts = [], []
        # Sorting by length keeps padding small when long and short windows are mixed.
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].ids))
        for start in range(0, len(order), self._chunk):
            chunk = [windows[i] for i in order[start : start + self._chunk]]
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
        inverse = np.argsort(np.asarray(order))
        return RawOutputs(
            harm=np.concatenate(harm_parts)[inverse], refusal=np.concatenate(refusal_parts)[inverse]
        )

    def harm_probabilities(self, texts: Sequence[str]) -> FloatArray:
        """[len(texts), 1 + len(HAZARDS)] probabilities, max over each text's windows."""
        if not texts:
            return np.zeros((0, 1 + len(HAZARDS)), dtype=np.float32)
        per_text = self.model.encoder.text_windows(texts)
        flat = [window for windows in per_text for window in windows]
        probabilities = _sigmoid(self.run(flat).harm)
        result = np.empty((len(texts), probabilities.shape[1]), dtype=np.float32)
        start = 0
        for row, windows in enumerate(per_text):
            result[row] = probabilities[start : start + len(windows)].max(axis=0)
            start += len(windows)
        return result

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
        return [
            HarmScore(
                risk=self.model.labels.calibrate(float(row[0])),
                categories={name: float(p) for name, p in zip(HAZARDS, row[1:], strict=True)},
            )
            for row in self.harm_probabilities(texts)
        ]

    def score_replies(self, replies: Sequence[ReplyInput]) -> list[ReplyScore]:
        return [
            ReplyScore(
                refusal=_REFUSALS[int(row.argmax())],
                probabilities={r: float(p) for r, p in zip(_REFUSALS, row, strict=True)},
            )
            for row in self.refusal_probabilities(replies)
        ]
