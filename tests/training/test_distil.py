"""guard.training.distil.distillation_loss: soft targets from a teacher model."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from guard.scoring import HAZARDS  # noqa: E402
from guard.training.data import REFUSAL_CLASSES  # noqa: E402
from guard.training.distil import distillation_loss  # noqa: E402


def _targets(harm: torch.Tensor, refusal: torch.Tensor) -> dict[str, torch.Tensor]:
    """Row 0 a prompt (harm teacher), row 1 a reply (refusal teacher)."""
    return {
        "teacher_harm": torch.stack([harm, torch.zeros_like(harm)]),
        "teacher_harm_mask": torch.tensor([[1.0], [0.0]]),
        "teacher_refusal": torch.stack([torch.zeros_like(refusal), refusal]),
        "teacher_refusal_mask": torch.tensor([[0.0], [1.0]]),
    }


def test_the_student_is_pulled_towards_the_teacher_and_rests_on_it() -> None:
    torch.manual_seed(0)
    teacher_harm = torch.randn(1 + len(HAZARDS)) * 3
    teacher_refusal = torch.randn(len(REFUSAL_CLASSES)) * 3
    targets = _targets(teacher_harm, teacher_refusal)

    def loss_at(
        harm: torch.Tensor, refusal: torch.Tensor
    ) -> tuple[float, torch.Tensor, torch.Tensor]:
        harm = harm.clone().requires_grad_(True)
        refusal = refusal.clone().requires_grad_(True)
        loss = distillation_loss(targets, harm, refusal, temperature=2.0)
        loss.backward()
        assert harm.grad is not None and refusal.grad is not None
        return float(loss.detach()), harm.grad, refusal.grad

    # Rows the teacher did not score (row 1 for harm, row 0 for replies) get no gradient.
    student_harm = torch.randn(2, 1 + len(HAZARDS))
    student_refusal = torch.randn(2, len(REFUSAL_CLASSES))
    away, harm_grad, refusal_grad = loss_at(student_harm, student_refusal)
    assert torch.all(harm_grad[1] == 0) and torch.all(refusal_grad[0] == 0)
    assert harm_grad[0].abs().sum() > 0 and refusal_grad[1].abs().sum() > 0

    # On the teacher's own logits the gradient vanishes and the loss is lowest.
    on_harm = student_harm.clone()
    on_harm[0] = teacher_harm
    on_refusal = student_refusal.clone()
    on_refusal[1] = teacher_refusal
    at_teacher, harm_grad, refusal_grad = loss_at(on_harm, on_refusal)
    assert harm_grad[0].abs().max() < 1e-6
    assert refusal_grad[1].abs().max() < 1e-6
    assert at_teacher < away
