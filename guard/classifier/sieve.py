"""The cascade's cheap stages: sieves that may clear a window before the transformer's end.

Most user turns are plainly benign, and the transformer's layers are the guard's largest
per-request cost.  Two stages can each *clear* a window (never block or flag it):

``sieve.onnx``
    a static-embedding model (trained by ``python3 -m guard.training.sieve``): the mean of
    the window's token vectors and a small head; tens of microseconds.
``exit.onnx``
    an early exit (``python3 -m guard.training.early_exit``): the shipped transformer is
    split after its first layer(s) into ``guard.onnx`` (front, output ``hidden``) and
    ``guard.tail.onnx`` (the rest and both heads); a small head on the front's pooled
    states clears a window before the tail runs.  A window that is not cleared continues
    from the same hidden states, so the transformer's answer is unchanged.

Each stage's clear point (``clear_below`` in its JSON file) is tuned on train/ only (see
its training module); what the stages cost in recall on eval/ is in models/MODEL_CARD.md.
Both stages score a window whole and in overlapping 32-token spans and keep the maximum
(see :data:`SPAN`).  A cleared window reports the stage's own probabilities, scaled so
that its clear point lands at half the transformer's flag point: a cleared text is never
flagged by itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guard.classifier.encoding import Encoder, IntArray, Window
from guard.errors import ModelLoadError, ScoringError

SIEVE_FILE = "sieve.onnx"
SIEVE_LABELS_FILE = "sieve.json"
EXIT_FILE = "exit.onnx"
EXIT_LABELS_FILE = "exit.json"
TAIL_FILE = "guard.tail.onnx"

FloatArray = npt.NDArray[np.float32]


class SieveLabels(BaseModel):
    """``sieve.json`` / ``exit.json``: a stage's clear point and how it was tuned."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_sha256: str
    dim: int | None = Field(default=None, ge=1)  # static sieve: token vector size
    layer: int | None = Field(default=None, ge=1)  # early exit: front layers it reads
    clear_below: float = Field(ge=0.0, le=1.0)
    tuning: dict[str, float] = Field(default_factory=dict)


def load_sieve_labels(model_dir: Path, name: str = SIEVE_LABELS_FILE) -> SieveLabels:
    path = model_dir / name
    setting = "classifier.sieve" if name == SIEVE_LABELS_FILE else "classifier.early_exit"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelLoadError(
            f"cannot read cascade stage labels {path}: {exc.strerror} "
            f"(train the stage, or set {setting}: false)"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"sieve labels {path} are not valid JSON: {exc}") from exc
    try:
        return SieveLabels.model_validate(raw)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) or "<root>" for e in exc.errors())
        raise ModelLoadError(f"sieve labels {path} are invalid ({fields}): {exc}") from exc


# A window is scored whole and in spans of SPAN tokens, SPAN // 2 apart, and the stage takes
# the maximum: a mean over a whole window dilutes a harmful sentence that follows a page
# of harmless text, a mean over a span that holds it does not.
SPAN = 32
# Only windows of at most this many content tokens may be cleared.  The stages pool, and a
# harmful sentence after ~100 tokens of harmless text can slip under a pooled head even
# with spans (measured: tests/classifier/test_sieve.py); longer text always goes to the
# transformer, whose attention does not dilute it.  Most chat turns are shorter.
MAX_CLEARABLE_TOKENS = 64


def spans(length: int) -> list[tuple[int, int]]:
    """(start, end) token ranges of a window's content: the whole, then overlapping spans."""
    result = [(0, length)]
    if length > SPAN:
        start = 0
        while True:
            end = min(start + SPAN, length)
            result.append((end - SPAN, end))
            if end == length:
                break
            start += SPAN // 2
    return result


def span_means(hidden: FloatArray, attention_mask: IntArray) -> tuple[FloatArray, IntArray]:
    """Mean hidden state of each span of each window, and the window each row belongs to.

    The whole-window row averages every position (as the heads were trained); span rows
    average content positions only (no [CLS]/[SEP]).
    """
    rows: list[FloatArray] = []
    owner: list[int] = []
    for index, length in enumerate(attention_mask.sum(axis=1).tolist()):
        states = hidden[index, :length]
        rows.append(states.mean(axis=0))
        owner.append(index)
        for start, end in spans(length - 2)[1:]:
            rows.append(states[1 + start : 1 + end].mean(axis=0))
            owner.append(index)
    return np.stack(rows).astype(np.float32), np.asarray(owner)


def _max_by_owner(scored: FloatArray, owner: IntArray, windows: int) -> FloatArray:
    result = np.zeros((windows, scored.shape[1]), dtype=np.float32)
    np.maximum.at(result, owner, scored)
    return result


class Sieve:
    """A loaded sieve; safe to call from threads (onnxruntime sessions are)."""

    def __init__(self, session: ort.InferenceSession, labels: SieveLabels, path: Path) -> None:
        self.session = session
        self.labels = labels
        self.path = path

    def _run(self, feed: dict[str, npt.NDArray[Any]]) -> FloatArray:
        try:
            (logits,) = self.session.run(["harm"], feed)
        except Exception as exc:  # onnxruntime's errors are untyped
            raise ScoringError(f"cascade stage inference failed: {type(exc).__name__}") from exc
        result: FloatArray = (1.0 / (1.0 + np.exp(-np.asarray(logits, np.float32)))).astype(
            np.float32
        )
        return result

    def window_probabilities(self, windows: Sequence[Window], encoder: Encoder) -> FloatArray:
        """Static sieve: [windows, 1 + hazards], the maximum over each window's spans."""
        rows: list[Window] = []
        owner: list[int] = []
        for index, window in enumerate(windows):
            content = window.ids[1:-1]
            for start, end in spans(len(content)):
                body = (window.ids[0], *content[start:end], window.ids[-1])
                rows.append(Window(ids=body, type_ids=(0,) * len(body)))
                owner.append(index)
        batch = encoder.batch(rows)
        scored = self._run({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
        return _max_by_owner(scored, np.asarray(owner), len(windows))

    def hidden_probabilities(self, hidden: FloatArray, attention_mask: IntArray) -> FloatArray:
        """Early exit: [windows, 1 + hazards] from the front's states, max over spans."""
        pooled, owner = span_means(hidden, attention_mask)
        return _max_by_owner(self._run({"pooled": pooled}), owner, len(hidden))

    def cleared(self, probabilities: FloatArray, lengths: IntArray) -> npt.NDArray[np.bool_]:
        """Which windows (content ``lengths`` in tokens) the transformer need not see."""
        result: npt.NDArray[np.bool_] = (probabilities[:, 0] < self.labels.clear_below) & (
            lengths <= MAX_CLEARABLE_TOKENS
        )
        return result

    def reported(self, probabilities: FloatArray, model_flag: float) -> FloatArray:
        """Cleared windows' probabilities on the transformer's raw scale (below half its flag)."""
        scale = 0.5 * model_flag / max(self.labels.clear_below, 1e-6)
        result: FloatArray = np.minimum(probabilities * scale, 0.5 * model_flag).astype(np.float32)
        return result
