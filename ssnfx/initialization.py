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
  layer kind.

What it cannot know (a Parameter the model uses directly, such as a class token; a tensor
constant the trace recorded) it leaves alone and names in its return value.
"""
from __future__ import annotations

import math

import torch
import torch.fx as fx
import torch.nn as nn

from .errors import PlanError
from .graph_module import fetch_attr
from .markers import STORE, require_store
from .plan import Slot

__all__ = ["initialize"]

_RNN_KINDS = {"RNN", "GRU", "LSTM"}
_MHA_INPUT_WEIGHTS = {"in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"}


@torch.no_grad()
def initialize(shared: fx.GraphModule) -> list[str]:
    """Initialise every tensor of a shared model that :func:`ssnfx.share` or the layers'
    defaults can initialise; return the names of the others.

    The second step of the meta-device recipe (build on ``meta``, share, ``to_empty``, reset);
    on a model with values it re-initialises it the same way. See :mod:`ssnfx.initialization`.

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
        >>> from ssnfx.initialization import initialize
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
        if _default_init(shared, s, tensor, slots):
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


def _default_init(shared: nn.Module, slot: Slot, t: torch.Tensor, slots: dict[str, Slot]) -> bool:
    """PyTorch's default init of ``slot``'s layer kind, in place; False if the kind has none."""
    role, kind = slot.role, slot.kind
    if kind == "Parameter":  # used directly by the model: its init is the model's own
        return False
    if kind in _RNN_KINDS:  # RNNBase.reset_parameters: U(-1/sqrt(hidden), 1/sqrt(hidden))
        owner = fetch_attr(shared, slot.name.rpartition(".")[0])
        bound = 1 / math.sqrt(owner.hidden_size) if owner.hidden_size > 0 else 0.0
        t.uniform_(-bound, bound)
        return True
    if kind == "MultiheadAttention":  # MultiheadAttention._reset_parameters
        if role in _MHA_INPUT_WEIGHTS:
            nn.init.xavier_uniform_(t)
        elif role in ("bias_k", "bias_v"):
            nn.init.xavier_normal_(t)
        elif role == "weight":  # out_proj keeps Linear's default
            bound = 1 / math.sqrt(_fan_in(t.shape, kind))
            t.uniform_(-bound, bound)
        else:  # in_proj_bias, out_proj.bias
            t.zero_()
        return True
    if "Embedding" in kind and role == "weight":
        nn.init.normal_(t)
        return True
    if role == "weight" and t.dim() >= 2:  # Linear, Conv*, ConvTranspose*, Bilinear
        bound = 1 / math.sqrt(_fan_in(t.shape, kind))
        t.uniform_(-bound, bound)
        return True
    if role == "bias":
        weight = slots.get(slot.name.rpartition(".")[0] + ".weight")
        if weight is not None and len(weight.shape) >= 2:
            bound = 1 / math.sqrt(_fan_in(weight.shape, weight.kind))
            t.uniform_(-bound, bound)
            return True
    return False


def _fan_in(shape: tuple[int, ...], kind: str) -> int:
    """The fan-in PyTorch's layers initialise from (Bilinear: its first input's size)."""
    if kind == "Bilinear":
        return max(1, shape[1])
    return max(1, math.prod(shape[1:]))
