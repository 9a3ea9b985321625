"""Training examples as model inputs: encoded windows, length-bucketed batches, tensors.

One window per example (its first: training texts are short), the harm target and its
hazard for user-side text, the reply type for replies, and a teacher's logits when
distilling (:mod:`guard.training.distil`).  Used by :mod:`guard.training.train`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from guard.classifier.encoding import Encoder, Window
from guard.scoring import HAZARDS
from guard.training.data import REFUSAL_CLASSES, Example


@dataclass(frozen=True, slots=True)
class Encoded:
    window: Window
    harm: float | None  # None: no harm target (replies)
    category: int | None  # index into HAZARDS; -1 benign (all zero); None unknown
    refusal: int | None
    # A teacher model's logits for this window (--teacher): harm for prompts, refusal for replies.
    teacher: tuple[float, ...] | None = None
    prompt: bool = True  # user-side text (harm head); False: a reply (refusal head)


def encode(encoder: Encoder, examples: list[Example]) -> list[Encoded]:
    prompts = [e for e in examples if not e.is_reply]
    replies = [e for e in examples if e.is_reply]
    result: list[Encoded] = []
    for example, windows in zip(
        prompts, encoder.text_windows([e.text for e in prompts], first_only=True), strict=True
    ):
        if example.harmful:
            category = HAZARDS.index(example.category) if example.category else None
        else:
            category = -1
        result.append(Encoded(windows[0], 1.0 if example.harmful else 0.0, category, None))
    reply_windows = encoder.reply_windows(
        [e.text for e in replies], [e.pair or "" for e in replies]
    )
    for example, window in zip(replies, reply_windows, strict=True):
        refusal = REFUSAL_CLASSES.index(example.refusal or "none")
        result.append(Encoded(window, None, None, refusal, prompt=False))
    return result


def unlabelled(encoder: Encoder, data: Path, count: int, seed: int) -> list[Encoded]:
    """``count`` train/ user texts without labels (never the dev split's): with --teacher,
    the teacher's scores on ordinary chat are their only target."""
    from guard.training.sieve import unlabelled_texts

    texts = unlabelled_texts(data / "train")
    texts = random.Random(seed).sample(texts, min(count, len(texts)))  # noqa: S311 - reproducible sampling, not security
    windows = encoder.text_windows(texts, first_only=True)
    return [Encoded(w[0], None, None, None) for w in windows]


def batches(items: list[Encoded], size: int, rng: random.Random) -> list[list[Encoded]]:
    """Length-bucketed batches (little padding), in random order."""
    shuffled = items[:]
    rng.shuffle(shuffled)
    pool = size * 50
    result: list[list[Encoded]] = []
    for start in range(0, len(shuffled), pool):
        chunk = sorted(shuffled[start : start + pool], key=lambda e: len(e.window.ids))
        result.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
    rng.shuffle(result)
    return result


def tensors(encoder: Encoder, batch: list[Encoded]) -> dict[str, torch.Tensor]:
    padded = encoder.batch([e.window for e in batch])
    n = len(batch)
    harm_target = torch.zeros((n, 1 + len(HAZARDS)))
    harm_mask = torch.zeros((n, 1 + len(HAZARDS)))
    refusal_target = torch.full((n,), -100, dtype=torch.long)
    teacher_harm = torch.zeros((n, 1 + len(HAZARDS)))
    teacher_harm_mask = torch.zeros((n, 1))
    teacher_refusal = torch.zeros((n, len(REFUSAL_CLASSES)))
    teacher_refusal_mask = torch.zeros((n, 1))
    for row, item in enumerate(batch):
        if item.teacher is not None and item.prompt:
            teacher_harm[row] = torch.tensor(item.teacher)
            teacher_harm_mask[row] = 1.0
        elif item.teacher is not None:
            teacher_refusal[row] = torch.tensor(item.teacher)
            teacher_refusal_mask[row] = 1.0
        if item.harm is not None:
            harm_target[row, 0] = item.harm
            harm_mask[row, 0] = 1.0
            if item.category is not None:
                harm_mask[row, 1:] = 1.0
                if item.category >= 0:
                    harm_target[row, 1 + item.category] = 1.0
        if item.refusal is not None:
            refusal_target[row] = item.refusal
    return {
        "input_ids": torch.from_numpy(padded.input_ids),
        "attention_mask": torch.from_numpy(padded.attention_mask),
        "token_type_ids": torch.from_numpy(padded.token_type_ids),
        "harm_target": harm_target,
        "harm_mask": harm_mask,
        "refusal_target": refusal_target,
        "teacher_harm": teacher_harm,
        "teacher_harm_mask": teacher_harm_mask,
        "teacher_refusal": teacher_refusal,
        "teacher_refusal_mask": teacher_refusal_mask,
    }
