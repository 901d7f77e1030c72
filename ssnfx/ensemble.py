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

import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from .errors import EnsembleError
from .markers import STORE, Meta

__all__ = ["Members", "member_output", "ensemble_loss", "EnsembleLoss",
           "average_probabilities", "EnsembleAverage", "ensemble", "as_members",
           "member", "member_names", "select_members"]  # noqa: F822  (the pass's: __getattr__)


def member_output(name: str, value: Any) -> Any:
    """Identity: marks ``value`` as the output of member ``name`` in a traced graph.

    torch.fx records each call as a node (``ssnfx.ensemble.member_output('0', fc)``), which
    :func:`member` and :func:`select_members` find; it costs nothing at run time.

    Example:
        >>> member_output("small", 3)
        3
    """
    return value


fx.wrap("member_output")


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "." in name or name == STORE:
        raise EnsembleError(f"member names must be non-empty strings without '.', other than "
                            f"{STORE!r} (the name of the parameter store); got {name!r}: pass a "
                            f"list, or a dict with such keys")
    return name


class Members(nn.Module):
    """Several models side by side: ``forward(x)`` returns every member's output for ``x``.

    The members are submodules named ``"0"``, ``"1"``, ... (from a list or tuple) or by the keys
    of a dict; the outputs are a tuple in that order. :func:`ssnfx.share` builds one from a list or
    dict; pass one to :func:`ssnfx.trace` or :func:`ssnfx.load` (``ssnfx.load(Members([...]),
    path)`` re-creates a shared ensemble from a checkpoint). Members take one input (a tensor, or
    one structure of tensors that each member indexes itself).

    Args:
        members: the models: a list or tuple, a dict of name to model, an ``nn.ModuleList`` or an
            ``nn.ModuleDict``. They may differ in family, width and depth; they must not share
            parameters with each other (each member is extracted and loaded on its own).

    Raises:
        EnsembleError: no members, a member that is not an ``nn.Module``, a bad name, or two
            members that share a parameter.

    Example:
        >>> import torch, ssnfx
        >>> from ssnfx.ensemble import Members
        >>> both = Members({"wide": torch.nn.Linear(4, 8), "narrow": torch.nn.Linear(4, 2)})
        >>> [tuple(y.shape) for y in both(torch.randn(3, 4))]
        [(3, 8), (3, 2)]
    """

    def __init__(self, members: Sequence[nn.Module] | Mapping[str, nn.Module]) -> None:
        super().__init__()
        if isinstance(members, (Mapping, nn.ModuleDict)):
            items = [(_check_name(k), m) for k, m in members.items()]
        elif isinstance(members, (Sequence, nn.ModuleList)) and not isinstance(members, str):
            items = [(str(i), m) for i, m in enumerate(members)]
        else:
            raise EnsembleError(f"Members expects a list or dict of models, got "
                                f"{type(members).__name__}")
        if not items:
            raise EnsembleError("Members needs at least one model")
        owner: dict[int, str] = {}
        for name, m in items:
            if not isinstance(m, nn.Module):
                raise EnsembleError(f"member {name!r} is a {type(m).__name__}, not an nn.Module")
            for pname, p in m.named_parameters(remove_duplicate=False):
                other = owner.setdefault(id(p), f"{name}.{pname}")
                if other.split(".")[0] != name:
                    raise EnsembleError(
                        f"members share a parameter ({other!r} is {name}.{pname!r}): each member "
                        f"must own its parameters, to be extracted and loaded on its own; pass "
                        f"separate instances (copy.deepcopy), or make the shared part one model")
            self.add_module(name, m)
        #: The member names, in the order of the outputs.
        self.names: tuple[str, ...] = tuple(name for name, _ in items)

    def forward(self, x: Any) -> tuple[Any, ...]:
        outputs = []
        for name in self.names:
            module = getattr(self, name)
            out = member_output(name, module(x))
            if isinstance(out, fx.Proxy):  # tracing: the extracted member's class name
                out.node.meta[Meta.MEMBER] = type(module).__name__
            outputs.append(out)
        return tuple(outputs)


def as_members(models: Any) -> nn.Module:
    """``models`` as one module: a list, tuple, dict, ``nn.ModuleList`` or ``nn.ModuleDict``
    becomes :class:`Members`; a module (a Members too) is returned as it is.

    Example:
        >>> import torch
        >>> type(as_members([torch.nn.Linear(2, 2), torch.nn.Linear(2, 3)])).__name__
        'Members'
    """
    if isinstance(models, (nn.ModuleList, nn.ModuleDict, list, tuple, Mapping)):
        return Members(models)
    return models


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
    # Imported here: the member-extraction pass builds on this module's Members and markers.
    from .passes.members import check_members, select_members

    if names is None:
        check_members(model, [])
        return EnsembleAverage(model)
    return EnsembleAverage(select_members(model, names))


_PASS = ("member", "member_names", "select_members")


def __getattr__(name: str) -> Any:
    # Member extraction is a pass (passes/members.py) that builds on this module's Members and
    # markers, so it is imported when first asked for here, not at the top.
    if name in _PASS:
        from .passes import members

        return getattr(members, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _EnsembleModule(types.ModuleType):
    """This module, callable only to say where the function went: ``ssnfx.ensemble`` is the
    module, ``ssnfx.ensemble.ensemble`` the function (once the same name at the top level)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("ssnfx.ensemble is the module: call ssnfx.ensemble.ensemble(model, "
                        "names) (from ssnfx.ensemble import ensemble)")


sys.modules[__name__].__class__ = _EnsembleModule
