"""Many models from one parameter store: ensembles of different widths, depths and families
(SWN Sec. 4: Teterwak et al., "Learning to Compose SuperWeights for Neural Parameter Allocation
Search").

``ssnfx.share([m1, m2, m3], budget)`` wraps the models in :class:`Members`, a container whose
forward returns every member's output for the same input, and runs the usual pipeline on it. The
slots are the members' parameters under qualified names (``"0.conv1.weight"``), one store serves
all members, a float budget is a fraction of the members' *total* parameters, and the search
clusters slots across members.

Each member's output passes through :func:`member_output`, an identity that torch.fx records as a
node naming the member. The graph itself thus says which output is whose, through rewrite, fold,
checkpoints (which re-trace) and export, and the functions below need nothing else:

* the member-extraction pass (:mod:`ssnfx.passes.members`, re-exported here): ``member``
  extracts one member as its own GraphModule, ``select_members`` keeps a subset,
  ``member_names`` lists the members;
* :func:`ensemble` averages the softmax probabilities of some members
  (:func:`average_probabilities`).
* :func:`ensemble_loss` sums a per-member loss over the members' outputs, for training and search.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ssnfx.core.errors import EnsembleError
from ssnfx.core.members import Members, as_members, member_output
from ssnfx.passes.members import check_members, member, member_names, select_members

__all__ = ["Members", "member_output", "ensemble_loss", "EnsembleLoss",
           "average_probabilities", "EnsembleAverage", "ensemble", "as_members",
           "member", "member_names", "select_members"]


class EnsembleLoss:
    """``loss_fn`` applied to every member's output, summed (optionally weighted): the loss of a
    model of several members, whose output is a tuple. Made by :func:`ensemble_loss`."""

    def __init__(self, loss_fn: Callable[..., torch.Tensor],
                 weights: Sequence[float] | None = None) -> None:
        if isinstance(loss_fn, EnsembleLoss):
            raise EnsembleError("ensemble_loss was given an ensemble loss: wrap the per-member "
                                "loss only once")
        self.loss_fn = loss_fn
        self.weights = None if weights is None else [float(w) for w in weights]

    def __call__(self, outputs: Sequence[Any], targets: Any) -> torch.Tensor:
        if not isinstance(outputs, (tuple, list)):
            raise EnsembleError(f"an ensemble loss expects the tuple of members' outputs, got "
                                f"{type(outputs).__name__}: use it with a model of several "
                                f"members (ssnfx.share([m1, m2, ...]))")
        weights = self.weights or [1.0] * len(outputs)
        if len(weights) != len(outputs):
            raise EnsembleError(f"{len(weights)} loss weights for {len(outputs)} members")
        losses = [w * self.loss_fn(out, targets) for w, out in zip(weights, outputs)]
        return torch.stack(losses).sum()

    def __repr__(self) -> str:
        return f"EnsembleLoss({self.loss_fn!r}, weights={self.weights})"


def ensemble_loss(loss_fn: Callable[..., torch.Tensor],
                  weights: Sequence[float] | None = None) -> EnsembleLoss:
    """The sum over members of ``loss_fn(member_output, targets)`` (times ``weights``).

    Every member is trained on the same targets, as in SWN's ensembles; the store receives the sum
    of the members' gradients. :func:`ssnfx.share` wraps its ``loss_fn`` in this when given
    several models (a loss already made by ``ensemble_loss`` is used as it is).

    Example:
        >>> import torch, ssnfx
        >>> loss = ssnfx.ensemble.ensemble_loss(torch.nn.functional.cross_entropy)
        >>> logits = (torch.zeros(2, 4), torch.zeros(2, 4))
        >>> round(float(loss(logits, torch.tensor([0, 1]))), 4)  # 2 * log(4)
        2.7726
    """
    return EnsembleLoss(loss_fn, weights)


def average_probabilities(outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The ensemble's prediction: the mean over members of ``softmax(logits)`` (last dim).

    Example:
        >>> import torch
        >>> average_probabilities([torch.tensor([[0., 0.]]), torch.tensor([[10., -10.]])])
        tensor([[0.7500, 0.2500]])
    """
    if isinstance(outputs, torch.Tensor) or not len(outputs):
        raise EnsembleError("average_probabilities expects a non-empty sequence of logits, one "
                            "tensor per member")
    return torch.stack([o.float().softmax(-1) for o in outputs]).mean(0)


class EnsembleAverage(nn.Module):
    """Wraps a model of several members: ``forward(x)`` is the mean of the members' softmax
    probabilities (:func:`average_probabilities`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Any) -> torch.Tensor:
        return average_probabilities(self.model(x))


def ensemble(model: fx.GraphModule, names: Sequence[str] | None = None) -> EnsembleAverage:
    """The ensemble of ``names`` (all members when None): a module that runs only those members
    and returns their averaged softmax probabilities. With a folded model it is what an anytime
    subset deploys (:func:`ssnfx.anytime.anytime_subset`); it exports like any module.

    Example:
        >>> import torch, ssnfx
        >>> folded = ssnfx.fold(ssnfx.share([torch.nn.Linear(8, 3), torch.nn.Linear(8, 3)], 0.5))
        >>> probs = ssnfx.ensemble.ensemble(folded)(torch.randn(4, 8))
        >>> torch.allclose(probs.sum(1), torch.ones(4))
        True
    """
    if names is None:
        check_members(model, [])
        return EnsembleAverage(model)
    return EnsembleAverage(select_members(model, names))
