"""The cascade's cheap first stage: a static-embedding sieve in front of the transformer.

Most user turns are plainly benign, and four transformer layers are the guard's largest
per-request cost.  The sieve (``models/sieve.onnx``, trained by
``python3 -m guard.training.sieve``) reads a window as the mean of its tokens' vectors and
scores it with a small head: tens of microseconds.  It can only *clear*: a window whose
sieve risk is below ``clear_below`` is not sent to the transformer; every other window is
scored by the transformer exactly as without the sieve.  ``clear_below`` is tuned on the
dev split of train/ so that the sieve forwards at least 99.5% of harmful dev prompts;
what it costs on eval/ is in models/MODEL_CARD.md.

A cleared window reports the sieve's own probabilities, scaled so that its clear point
lands at half the transformer's flag point: a cleared text is never flagged by itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guard.classifier.encoding import Batch
from guard.errors import ModelLoadError, ScoringError

SIEVE_FILE = "sieve.onnx"
SIEVE_LABELS_FILE = "sieve.json"

FloatArray = npt.NDArray[np.float32]


class SieveLabels(BaseModel):
    """``models/sieve.json``: the sieve's clear point and how it was tuned."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_sha256: str
    dim: int = Field(ge=1)
    clear_below: float = Field(ge=0.0, le=1.0)
    tuning: dict[str, float] = Field(default_factory=dict)


def load_sieve_labels(model_dir: Path) -> SieveLabels:
    path = model_dir / SIEVE_LABELS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelLoadError(
            f"cannot read sieve labels {path}: {exc.strerror} "
            "(train one with guard.training.sieve, or set classifier.sieve: false)"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"sieve labels {path} are not valid JSON: {exc}") from exc
    try:
        return SieveLabels.model_validate(raw)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) or "<root>" for e in exc.errors())
        raise ModelLoadError(f"sieve labels {path} are invalid ({fields}): {exc}") from exc


class Sieve:
    """A loaded sieve; safe to call from threads (onnxruntime sessions are)."""

    def __init__(self, session: ort.InferenceSession, labels: SieveLabels, path: Path) -> None:
        self.session = session
        self.labels = labels
        self.path = path

    def probabilities(self, batch: Batch) -> FloatArray:
        """[windows, 1 + hazards] sigmoid probabilities, in the harm head's column order."""
        try:
            (logits,) = self.session.run(
                ["harm"], {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
            )
        except Exception as exc:  # onnxruntime's errors are untyped
            raise ScoringError(f"sieve inference failed: {type(exc).__name__}") from exc
        result: FloatArray = (1.0 / (1.0 + np.exp(-np.asarray(logits, np.float32)))).astype(
            np.float32
        )
        return result

    def cleared(self, probabilities: FloatArray) -> npt.NDArray[np.bool_]:
        """Which windows the transformer need not see."""
        result: npt.NDArray[np.bool_] = probabilities[:, 0] < self.labels.clear_below
        return result

    def reported(self, probabilities: FloatArray, model_flag: float) -> FloatArray:
        """Cleared windows' probabilities on the transformer's raw scale (below half its flag)."""
        scale = 0.5 * model_flag / max(self.labels.clear_below, 1e-6)
        result: FloatArray = np.minimum(probabilities * scale, 0.5 * model_flag).astype(np.float32)
        return result
