"""A plain training loop with a progress bar: what the CLI, the tests and the benchmarks share."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn

from ._progress import progress as _progress
from .batches import call_model
from .errors import SsnfxError

__all__ = ["train", "accuracy", "predict", "MetricError"]


class MetricError(SsnfxError, ValueError):
    """The model's outputs are not what a metric needs (class scores per example)."""


def train(model: nn.Module, loader: Iterable[Any], loss_fn: Callable[..., torch.Tensor],
          epochs: int = 1, lr: float = 1e-2, optimizer: torch.optim.Optimizer | None = None,
          progress: bool = True, on_epoch: Callable[[int], None] | None = None) -> list[float]:
    """Train ``model`` for ``epochs`` over ``(inputs, targets)`` batches; returns the epoch losses.

    The default optimizer is Adam with a cosine schedule over all steps. ``on_epoch(epoch)`` is
    called after each epoch (0-based), in the middle of one optimizer's schedule: for example to
    :func:`ssnfx.refine` a hard-shared model after E epochs (SWN Sec. 2.2.2).

    Example:
        >>> import torch, ssnfx
        >>> from ssnfx.data import digits
        >>> train_loader, test_loader = digits()
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> losses = ssnfx.training.train(model, train_loader, torch.nn.functional.cross_entropy)
        >>> losses[-1] < 2.3
        True
    """
    model.train()
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * len(loader) if hasattr(loader, "__len__") else None
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if steps else None
    losses = []
    for epoch in range(epochs):
        total, count = 0.0, 0
        batches = _progress(loader, len(loader) if hasattr(loader, "__len__") else None,
                            f"epoch {epoch + 1}/{epochs}", progress)
        for x, y in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(call_model(model, x), y)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
        losses.append(total / max(count, 1))
        if on_epoch is not None:
            on_epoch(epoch)
            model.train()  # the callback may have measured in eval mode
    return losses


def _scores(out: Any) -> torch.Tensor:
    """Class scores of shape (batch, classes): the output, or its ``logits`` (a Hugging Face
    model's output, or a dict)."""
    scores = out["logits"] if isinstance(out, Mapping) and "logits" in out \
        else getattr(out, "logits", out)
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        what = f"a tensor of shape {tuple(scores.shape)}" if isinstance(scores, torch.Tensor) \
            else f"a {type(out).__name__}"
        raise MetricError(f"accuracy needs class scores of shape (batch, classes), and the "
                          f"model returns {what}")
    return scores


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable[Any]) -> torch.Tensor:
    """Predicted classes of ``model`` (in eval mode) over a loader.

    Raises:
        MetricError: the outputs (or their ``logits``) are not of shape (batch, classes).
    """
    model.eval()
    return torch.cat([_scores(call_model(model, x)).argmax(1) for x, _ in loader])


@torch.no_grad()
def accuracy(model: nn.Module, loader: Iterable[Any]) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) over a loader."""
    labels = torch.cat([y for _, y in loader])
    return float((predict(model, loader) == labels).float().mean())
