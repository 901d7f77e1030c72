"""The one-liner: ``ssnfx.share(model, budget)``."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from ssnfx.core.config import ShareConfig
from ssnfx.core.errors import SearchError
from ssnfx.core.graph_module import release
from ssnfx.core.members import Members, as_members
from ssnfx.ensemble import EnsembleLoss, ensemble_loss
from ssnfx.passes.planner import make_plan
from ssnfx.passes.rewriting import bind, rewrite
from ssnfx.passes.searching import SearchConfig, search
from ssnfx.passes.tracing import trace

__all__ = ["share"]


def share(model: nn.Module | Sequence[nn.Module] | Mapping[str, nn.Module],
          budget: float | int = 0.1, config: ShareConfig | None = None, *,
          data: Iterable[Any] | None = None,
          loss_fn: Callable[..., torch.Tensor] | None = None,
          search_config: SearchConfig | None = None) -> nn.Module:
    """Return a model that trains with ``budget`` parameters generated from a shared store.

    With ``data`` and ``loss_fn`` the search pass learns where to share (:func:`ssnfx.search`);
    without them the data-free plan of ``config.strategy`` is used (one group by default, depth
    bins where the budget outgrows it; see :mod:`ssnfx.core.grouping`). The input model is not
    modified.

    Several models (a list or dict) share one store (SWN Sec. 4): they are wrapped in
    :class:`ssnfx.ensemble.Members`, whose output is the tuple of the members' outputs; the
    budget is a fraction of their total parameters, the search clusters slots across them, and
    ``loss_fn`` is applied to each member's output and summed
    (:func:`ssnfx.ensemble.ensemble_loss`; a loss made by it is used as it is).
    :func:`ssnfx.ensemble.member` then extracts one member, shared or folded.

    Args:
        model: any traceable ``nn.Module``, or several: a list, tuple or dict of them (or a
            :class:`ssnfx.ensemble.Members`).
        budget: a float is a fraction of the model's trainable parameters (0.01 to 4.0 and
            beyond; frozen ones stay frozen and outside it; above 1
            the model trains with more parameters than it deploys with, and fold removes them),
            an int an absolute parameter count.
        config: a :class:`ShareConfig`; ``ShareConfig()`` when omitted.
        data: ``(inputs, targets)`` batches for the search.
        loss_fn: ``loss_fn(model(inputs), targets)``, a scalar.
        search_config: a :class:`SearchConfig`.

    Returns:
        A copy of ``model`` of its own class (``isinstance`` holds, every method works) whose
        shared weights are generated from the store ``shared.ssnfx`` (see
        :mod:`ssnfx.core.shared_model`): train it like the original, then :func:`ssnfx.fold` it for
        deployment. Several models give the GraphModule of their
        :class:`ssnfx.ensemble.Members`.

    Example:
        >>> import torch, ssnfx
        >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
        ...                             torch.nn.Linear(64, 10))
        >>> shared = ssnfx.share(model, budget=0.25)
        >>> sum(p.numel() for p in shared.parameters()) <= 0.25 * 4810
        True
        >>> shared(torch.randn(2, 64)).shape
        torch.Size([2, 10])
        >>> pair = ssnfx.share([torch.nn.Linear(64, 10), model], budget=0.25)  # one store
        >>> [tuple(y.shape) for y in pair(torch.randn(2, 64))]
        [(2, 10), (2, 10)]
    """
    config = config or ShareConfig()
    if (data is None) != (loss_fn is None):
        raise SearchError("share needs both data and loss_fn to search, or neither")
    model = as_members(model)
    members = isinstance(model, Members)
    if members and loss_fn is not None and not isinstance(loss_fn, EnsembleLoss):
        loss_fn = ensemble_loss(loss_fn)
    gm = trace(model, leaf_modules=config.leaf_modules, concrete_args=config.concrete_args,
               auto_leaves=config.auto_leaves)
    try:
        if data is not None:
            plan = search(gm, budget, data, loss_fn, config, search_config)  # type: ignore
        else:
            plan = make_plan(gm, budget, config)
        # Several models share through their Members graph; one model stays its own class.
        return rewrite(gm, plan) if members else bind(model, gm, plan)
    finally:
        release(gm)  # nothing of the original model outlives share unless the caller holds it
