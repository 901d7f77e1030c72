"""Initialise a shared model whose tensors hold no values: the meta-device recipe.

A model built under ``torch.device("meta")`` allocates nothing; sharing it allocates nothing
either (the store and coefficients are created on the meta device, the gains left to compute).
``shared.to_empty(device=...)`` then allocates every tensor, uninitialised, and
:func:`initialize` fills them:

* the parameter store: the store and coefficients are drawn from the plan's seed, as
  :func:`ssnfx.share` draws them, and the gains recomputed so that each generated weight starts
  at its recorded target standard deviation (on the meta device that is PyTorch's default fan-in
  init, ``1 / sqrt(3 * fan_in)``, since a meta weight has no values to measure);
* modules that kept all their parameters and define ``reset_parameters`` (norms, with their
  running statistics; leaves whose weights are not shared): their own method;
* the other private parameters of PyTorch's layers (biases of Linear and Conv*, the biases of
  MultiheadAttention, RNN/GRU/LSTM biases, unshared weights): PyTorch's default init for that
  layer kind (:meth:`ssnfx.core.layer_kinds.LayerKind.init_private`).

What it cannot know (a Parameter the model uses directly, such as a class token; a tensor
constant the trace recorded) it leaves alone and names in its return value.
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from ssnfx.core.errors import PlanError
from ssnfx.core.graph_module import fetch_attr
from ssnfx.core.layer_kinds import kind_of
from ssnfx.core.markers import STORE, require_store
from ssnfx.core.plan import Slot

__all__ = ["initialize"]


@torch.no_grad()
def initialize(shared: fx.GraphModule) -> list[str]:
    """Initialise every tensor of a shared model that :func:`ssnfx.share` or the layers'
    defaults can initialise; return the names of the others.

    The second step of the meta-device recipe (build on ``meta``, share, ``to_empty``, reset);
    on a model with values it re-initialises it the same way. See :mod:`ssnfx.core.initialization`.

    Args:
        shared: a model from :func:`ssnfx.share` or :func:`ssnfx.rewrite`.

    Returns:
        The names of the parameters and buffers left as they were (initialise them as your model
        does; an empty list means the whole model was initialised).

    Raises:
        PlanError: ``shared`` has no parameter store (it is not a shared model).

    Example:
        >>> import torch, ssnfx
        >>> with torch.device("meta"):
        ...     net = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(),
        ...                               torch.nn.Linear(16, 4))
        >>> shared = ssnfx.share(net, budget=0.5)          # allocates nothing
        >>> from ssnfx.core.initialization import initialize
        >>> initialize(shared.to_empty(device="cpu"))
        []
        >>> shared(torch.randn(2, 16)).shape
        torch.Size([2, 4])
    """
    store = require_store(shared, "initialize", PlanError)
    store.reset_parameters()
    done = {id(t) for t in (*store.parameters(), *store.buffers())}
    plan = store.plan
    shared_names = {n for s in plan.slots if s.shared for n in (s.name, *s.aliases)}
    for path, module in shared.named_modules():
        if not path or path.split(".")[0] == STORE or not hasattr(module, "reset_parameters"):
            continue
        # A module that lost a parameter to the store cannot run its own reset (it reads it).
        if any(n.startswith(path + ".") for n in shared_names):
            continue
        module.reset_parameters()
        done.update(id(t) for t in (*module.parameters(), *module.buffers()))
    slots = {s.name: s for s in plan.slots}
    for s in plan.slots:
        tensor = _tensor_of(shared, s)
        if s.shared or tensor is None or id(tensor) in done:
            continue
        if kind_of(s).init_private(tensor, s, shared, slots):
            done.add(id(tensor))
    named = [*shared.named_parameters(), *shared.named_buffers()]
    return sorted(name for name, t in named if id(t) not in done)


def _tensor_of(shared: nn.Module, slot: Slot) -> torch.Tensor | None:
    """The shared model's tensor for a (private) slot, under its name or one of its aliases."""
    for name in (slot.name, *slot.aliases):
        try:
            return fetch_attr(shared, name)
        except AttributeError:
            continue
    return None
