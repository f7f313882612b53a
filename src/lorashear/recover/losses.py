"""Losses of recovery: next-token cross-entropy on labelled tokens, and distillation from the dense model."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lorashear.recover.streams import IGNORE


def _shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Position t predicts token t + 1: drop the last logit and the first label."""
    return logits[:, :-1, :], labels[:, 1:]


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over tokens whose label is not IGNORE (0 when there are none)."""
    total, count = lm_loss_sum(logits, labels)
    # A packed stage-2 block can lie wholly inside a long prompt: no targets, no loss (not NaN).
    return total / count.clamp(min=1)


def lm_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy, number of target tokens): exact means across batches and processes."""
    logits, labels = _shift(logits, labels)
    total = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return total, (labels != IGNORE).sum()


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T² · KL(teacher ‖ student) of the temperature-softened next-token distributions, mean over labelled tokens.

    The T² factor keeps the gradient scale independent of T (Hinton et al., 2015).
    """
    student, shifted = _shift(student_logits, labels)
    teacher, _ = _shift(teacher_logits, labels)
    mask = shifted != IGNORE
    log_p_student = F.log_softmax(student[mask].float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher[mask].float() / temperature, dim=-1)
    per_token = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="none").sum(-1)
    return per_token.sum() / max(int(mask.sum()), 1) * temperature**2


def recovery_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    kd_weight: float = 0.0,
    temperature: float = 2.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(1 − w) · CE + w · KD, with its parts for the logs; KD is skipped when w = 0."""
    ce = lm_loss(student_logits, labels)
    parts = {"lm_loss": float(ce.detach())}
    if kd_weight <= 0 or teacher_logits is None:
        return ce, parts
    kd = kd_loss(student_logits, teacher_logits, labels, temperature)
    parts["kd_loss"] = float(kd.detach())
    return (1.0 - kd_weight) * ce + kd_weight * kd, parts
