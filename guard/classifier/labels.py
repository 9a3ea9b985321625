"""``models/labels.json``: what the model's outputs mean and how to feed it.

Written by training, read by the scorer at start-up; a file that disagrees with
``guard.scoring`` (hazard order, refusal classes) is refused rather than misread.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from guard.classifier.encoding import Windowing
from guard.errors import ModelLoadError
from guard.scoring import HAZARDS, Refusal

LABELS_FILE = "labels.json"
MODEL_FILE = "guard.onnx"
TOKENIZER_FILE = "tokenizer.json"

# Where the tuned flag and block points land on the guard's risk scale (policies/ use it).
RISK_FLAG = 0.5
RISK_BLOCK = 0.85
# Risks (on that scale) where a text scored in a batch is scored again alone: int8 dynamic
# quantization makes a batched score depend on its companions, by up to 1.59 logits on the
# train dev split (benchmarks/batch_noise.py).  Every decision point of the shipped policies
# lies in 0.3-0.95, and this band reaches at least 2 logits beyond both, so a decision
# never rests on a batch-dependent score.
CONFIRM_BAND = (0.05, 0.993)
# The same for a reply's type: confirmed alone when its two likeliest types are within this
# many nats (batching changed a type at margins up to 0.79 on the dev split's replies).
CONFIRM_REPLY_MARGIN = 1.5


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


class ReplyHeadFit(BaseModel):
    """How the refusal head was refit on the frozen encoder (guard.training.reply_head)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    l2: float = Field(ge=0.0)
    examples: int = Field(ge=1)
    sources: dict[str, int]
    dev_refit: dict[str, float]
    dev_shipped: dict[str, float]
    wall_s: float
    tail_sha256: str


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
    reply_head: ReplyHeadFit | None = None  # set when the refusal head was refit alone
    soup_of: tuple[str, ...] = ()  # model versions averaged into this one (guard.training.soup)

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

    @staticmethod
    def decision(risk: float) -> str:
        """allow / flag / block for a calibrated risk under the default thresholds."""
        if risk >= RISK_BLOCK:
            return "block"
        if risk >= RISK_FLAG:
            return "flag"
        return "allow"

    def calibrate(self, probability: float) -> float:
        """A raw harm probability on the guard's risk scale.

        Policies are written once, on a scale where :data:`RISK_FLAG` is the model's tuned
        flag point and :data:`RISK_BLOCK` its tuned block point; each model ships its own
        points in labels.json, so a retrained model needs no policy edits.  The map is
        piecewise linear and monotone, so it never reorders two texts.
        """
        flag, block = self.thresholds.flag, self.thresholds.block
        points = ((0.0, 0.0), (flag, RISK_FLAG), (block, RISK_BLOCK), (1.0, 1.0))
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            if probability <= x1:
                if x1 <= x0:
                    return y1
                return y0 + (y1 - y0) * (probability - x0) / (x1 - x0)
        return 1.0


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
