"""Knowledge distillation from a teacher's soft targets (Hinton et al., 2015), to combine with an
over-parameterised shared student (SSN Sec. 4.6: Plummer et al., "Neural Parameter Allocation
Search"; sections as numbered in its version titled "Shapeshifter Networks: Cross-layer Parameter
Sharing for Scalable and Effective Deep Learning").

A student shared at a budget above 1 (``ssnfx.share(student, 4.0)``) trains with more
parameters than it has, and :func:`ssnfx.fold` removes them at deployment with no loss. SSN
combines this with a teacher; here the teacher's part is the classic soft-target loss:

* :func:`distillation_loss`: ``alpha * T^2 * KL(softmax(t / T) || softmax(s / T))
  + (1 - alpha) * CE(s, y)``;
* :class:`DistillationLoss`: the same as a ``loss_fn(student_logits, (targets, teacher_logits))``
  for :func:`ssnfx.training.train` and :func:`ssnfx.share` (search);
* :func:`with_teacher`: batches ``(x, y)`` become ``(x, (y, teacher(x)))``.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["distillation_loss", "DistillationLoss", "with_teacher", "WithTeacher"]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      targets: torch.Tensor, temperature: float = 4.0,
                      alpha: float = 0.9) -> torch.Tensor:
    """Hinton et al.'s distillation loss: ``alpha`` times the KL divergence from the teacher's
    to the student's softened distributions (temperature ``T``), scaled by ``T^2`` so that its
    gradients keep their size as ``T`` changes, plus ``1 - alpha`` times the cross-entropy with
    the true ``targets``. The teacher's logits receive no gradient.

    Args:
        student_logits: ``(N, C)`` (or ``(N, C, ...)``) logits of the student.
        teacher_logits: the teacher's logits of the same shape.
        targets: class indices, as for :func:`torch.nn.functional.cross_entropy`.
        temperature: T > 0; 1 compares the plain distributions.
        alpha: weight of the soft targets in [0, 1]; 0 is plain cross-entropy.

    Example:
        >>> import torch
        >>> s, y = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
        >>> float(distillation_loss(s, s, y, alpha=1.0))  # the student already is the teacher
        0.0
        >>> torch.equal(distillation_loss(s, -s, y, alpha=0.0),
        ...             torch.nn.functional.cross_entropy(s, y))
        True
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha weighs the soft targets and must be in [0, 1], got {alpha!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: "
                         f"{tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}; the "
                         f"teacher must predict the same classes")
    hard = F.cross_entropy(student_logits, targets)
    if alpha == 0.0:
        return hard
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1),
                    F.log_softmax(teacher_logits.detach() / t, dim=1),
                    reduction="none", log_target=True).sum(1).mean()
    return alpha * t * t * soft + (1.0 - alpha) * hard


class DistillationLoss:
    """:func:`distillation_loss` as ``loss_fn(student_logits, (targets, teacher_logits))``, the
    shape of batches that :func:`with_teacher` yields.

    Example:
        >>> import torch
        >>> loss_fn = DistillationLoss(temperature=2.0, alpha=0.5)
        >>> s = torch.tensor([[1.0, 0.0]])
        >>> float(loss_fn(s, (torch.tensor([0]), s))) == float(
        ...     0.5 * torch.nn.functional.cross_entropy(s, torch.tensor([0])))
        True
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9) -> None:
        self.temperature = temperature
        self.alpha = alpha

    def __call__(self, student_logits: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor]
                 ) -> torch.Tensor:
        if not isinstance(target, (tuple, list)) or len(target) != 2:
            raise ValueError("DistillationLoss expects targets (labels, teacher_logits): wrap the "
                             "data in ssnfx.distill.with_teacher(data, teacher)")
        labels, teacher_logits = target
        return distillation_loss(student_logits, teacher_logits, labels, self.temperature,
                                 self.alpha)

    def __repr__(self) -> str:
        return f"DistillationLoss(temperature={self.temperature}, alpha={self.alpha})"


class WithTeacher:
    """Batches ``(x, y)`` of ``data`` as ``(x, (y, teacher(x)))``; made by :func:`with_teacher`."""

    def __init__(self, data: Iterable[Any], teacher: nn.Module) -> None:
        self.data = data
        self.teacher = teacher

    def __iter__(self) -> Iterator[tuple[Any, tuple[Any, torch.Tensor]]]:
        self.teacher.eval()
        for x, y in self.data:
            with torch.no_grad():
                logits = self.teacher(*x) if isinstance(x, (tuple, list)) else self.teacher(x)
            yield x, (y, logits)

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]


def with_teacher(data: Iterable[Any], teacher: nn.Module) -> WithTeacher:
    """``data``'s batches with the teacher's logits beside the targets: ``(x, (y, teacher(x)))``,
    the teacher in eval mode without gradients, computed as the batches are drawn (so shuffling
    and augmentation stay the data's own). Pair it with :class:`DistillationLoss`.

    Example:
        >>> import torch
        >>> teacher = torch.nn.Linear(4, 3)
        >>> x, (y, t) = next(iter(with_teacher([(torch.randn(2, 4), torch.tensor([0, 2]))],
        ...                                    teacher)))
        >>> tuple(t.shape), t.requires_grad
        ((2, 3), False)
    """
    return WithTeacher(data, teacher)
