"""Distillation: a trained model's outputs as soft targets for another (``train --teacher``).

The teacher scores every training window once, before training: harm logits for prompts,
reply-type logits for replies.  The student then learns from a mix of the labels and
these soft targets (``--distil`` weight, ``--temperature``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from guard.classifier.encoding import Window
from guard.classifier.predictor import Predictor
from guard.classifier.session import load_model


def teacher_logits(
    teacher_dir: Path, windows: Sequence[Window], is_prompt: Sequence[bool], threads: int
) -> list[tuple[float, ...]]:
    """The teacher's logits per window: harm for a prompt's window, reply type for a reply's."""
    teacher = Predictor(load_model(teacher_dir, intra_op_threads=threads))
    raw = teacher.run(windows)
    return [
        tuple(float(x) for x in (raw.harm[i] if prompt else raw.refusal[i]))
        for i, prompt in enumerate(is_prompt)
    ]


def distillation_loss(
    t: dict[str, torch.Tensor],
    harm_logits: torch.Tensor,
    refusal_logits: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Soft targets from the teacher: every harm output (sigmoid) and the reply type (softmax),
    both softened by ``temperature`` and scaled by its square (Hinton et al.)."""
    loss = torch.zeros(())
    harm_rows = t["teacher_harm_mask"][:, 0] > 0
    if harm_rows.any():
        soft = torch.sigmoid(t["teacher_harm"][harm_rows] / temperature)
        loss = (
            loss
            + nn.functional.binary_cross_entropy_with_logits(
                harm_logits[harm_rows] / temperature, soft
            )
            * temperature**2
        )
    reply_rows = t["teacher_refusal_mask"][:, 0] > 0
    if reply_rows.any():
        soft = torch.softmax(t["teacher_refusal"][reply_rows] / temperature, dim=1)
        log_student = torch.log_softmax(refusal_logits[reply_rows] / temperature, dim=1)
        loss = (
            loss + nn.functional.kl_div(log_student, soft, reduction="batchmean") * temperature**2
        )
    return loss
