"""``models/labels.json``: what the model's outputs mean and how to feed it.

Written by training, read by the scorer at start-up; a file that disagrees with
``guard.scoring`` (hazard order, refusal classes) is refused rather than misread.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from guard.classifier.encoding import Windowing
from guard.errors import ModelLoadError
from guard.scoring import HAZARDS, Refusal

LABELS_FILE = "labels.json"
MODEL_FILE = "guard.onnx"
TOKENIZER_FILE = "tokenizer.json"


class Thresholds(BaseModel):
    """Default decision thresholds on the overall risk, tuned on a dev split of train/."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flag: float = Field(ge=0.0, le=1.0)
    block: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.block < self.flag:
            raise ValueError("block threshold must not be below the flag threshold")
        return self


class Labels(BaseModel):
    """The label map and window geometry shipped beside the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_version: str
    model_sha256: str
    hazards: tuple[str, ...]
    refusal_classes: tuple[str, ...]
    max_length: int = Field(ge=8)
    stride: int = Field(ge=1)
    reply_prompt_tokens: int = Field(ge=0)
    thresholds: Thresholds
    base_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    layers: int = Field(ge=1)
    tuning: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _matches_contract(self) -> Labels:
        if self.hazards != HAZARDS:
            raise ValueError("hazards differ from guard.scoring.HAZARDS (order matters)")
        if self.refusal_classes != tuple(r.value for r in Refusal):
            raise ValueError("refusal_classes differ from guard.scoring.Refusal")
        return self

    @property
    def windowing(self) -> Windowing:
        return Windowing(self.max_length, self.stride, self.reply_prompt_tokens)

    def decision(self, risk: float) -> str:
        """allow / flag / block under the default thresholds."""
        if risk >= self.thresholds.block:
            return "block"
        if risk >= self.thresholds.flag:
            return "flag"
        return "allow"


def load_labels(model_dir: Path) -> Labels:
    path = model_dir / LABELS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelLoadError(f"cannot read label map {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"label map {path} is not valid JSON: {exc}") from exc
    try:
        return Labels.model_validate(raw)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) or "<root>" for e in exc.errors())
        raise ModelLoadError(f"label map {path} is invalid ({fields}): {exc}") from exc
