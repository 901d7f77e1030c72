"""A plain training loop with a progress bar: what the CLI, the tests and the benchmarks share."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn

from ssnfx.core._progress import progress as _progress
from ssnfx.core.batches import call_model
from ssnfx.core.errors import SsnfxError
from ssnfx.core.markers import store_of
from ssnfx.passes.refining import RefineResult, refine

__all__ = ["train", "refine_if_due", "accuracy", "predict", "MetricError"]


class MetricError(SsnfxError, ValueError):
    """The model's outputs are not what a metric needs (class scores per example)."""


def refine_if_due(model: nn.Module, data: Iterable[Any], loss_fn: Callable[..., torch.Tensor],
                  step: int, total: int) -> RefineResult | None:
    """SWN Sec. 2.2.2 in any training loop: after step ``step`` (1-based) of ``total``, refine a
    hard-shared model once its plan's ``refine_at`` fraction of the run is reached
    (:class:`ssnfx.ShareConfig`), measuring on batches of ``data``; returns what
    :func:`ssnfx.refine` did, or None when nothing was due (or the model is not shared, or
    already refined). :func:`train` calls it after every step.

    Example:
        >>> import torch, ssnfx
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
        >>> cfg = ssnfx.ShareConfig(method="swn", options={"hard_sharing": True}, refine_at=0.5)
        >>> shared = ssnfx.share(net, 0.5, cfg)
        >>> data = [(torch.randn(4, 8), torch.randn(4, 8))] * 4
        >>> mse = torch.nn.functional.mse_loss
        >>> [refine_if_due(shared, data, mse, step, 4) is not None for step in (1, 2, 3)]
        [False, True, False]
    """
    store = store_of(model)
    plan = getattr(store, "plan", None)
    at = None if plan is None else plan.options.refine_at
    if at is None or plan.measured.get("refined") or step < max(1, math.ceil(at * total)):
        return None
    result = refine(model, data, loss_fn)
    model.train()  # (the measurement ran in the model's mode; a callback may not have)
    return result


def train(model: nn.Module, loader: Iterable[Any], loss_fn: Callable[..., torch.Tensor],
          epochs: int = 1, lr: float = 1e-2, optimizer: torch.optim.Optimizer | None = None,
          progress: bool = True, on_epoch: Callable[[int], None] | None = None) -> list[float]:
    """Train ``model`` for ``epochs`` over ``(inputs, targets)`` batches; returns the epoch losses.

    The default optimizer is Adam with a cosine schedule over all steps. A hard-shared SWN model
    is refined when its plan says (``ShareConfig.refine_at``, SWN Sec. 2.2.2: hard sharing for
    the first part of training, then the coefficients whose uses pull apart untied), in the
    middle of one optimizer's schedule (:func:`refine_if_due`). ``on_epoch(epoch)`` is called
    after each epoch (0-based).

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
    step = 0
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
            step += 1
            if steps is not None:
                refine_if_due(model, loader, loss_fn, step, steps)
        if steps is None:  # a loader without a length: refine at an epoch's end
            refine_if_due(model, loader, loss_fn, epoch + 1, epochs)
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
