"""The one-liner: ``ssnfx.share(model, budget)``."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from .config import ShareConfig
from .errors import SearchError
from .passes.rewrite import rewrite
from .passes.search import SearchConfig, search
from .passes.trace import trace
from .planner import make_plan

__all__ = ["share"]


def share(model: nn.Module, budget: float | int = 0.1, config: ShareConfig | None = None, *,
          data: Iterable[Any] | None = None,
          loss_fn: Callable[..., torch.Tensor] | None = None,
          search_config: SearchConfig | None = None) -> fx.GraphModule:
    """Return a model that trains with ``budget`` parameters generated from a shared store.

    With ``data`` and ``loss_fn`` the search pass learns where to share (:func:`ssnfx.search`);
    without them the data-free plan of ``config.strategy`` is used (one group by default; see
    :mod:`ssnfx.grouping`). The input model is not modified.

    Args:
        model: any traceable ``nn.Module``.
        budget: a float is a fraction of the model's parameters (0.01 to 4.0 and beyond), an int
            an absolute parameter count.
        config: a :class:`ShareConfig`; ``ShareConfig()`` when omitted.
        data: ``(inputs, targets)`` batches for the search.
        loss_fn: ``loss_fn(model(inputs), targets)``, a scalar.
        search_config: a :class:`SearchConfig`.

    Returns:
        A GraphModule: train it like the original, then :func:`ssnfx.fold` it for deployment.

    Example:
        >>> import torch, ssnfx
        >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
        ...                             torch.nn.Linear(64, 10))
        >>> shared = ssnfx.share(model, budget=0.25)
        >>> sum(p.numel() for p in shared.parameters()) <= 0.25 * 4810
        True
        >>> shared(torch.randn(2, 64)).shape
        torch.Size([2, 10])
    """
    config = config or ShareConfig()
    if (data is None) != (loss_fn is None):
        raise SearchError("share needs both data and loss_fn to search, or neither")
    gm = trace(model, leaf_modules=config.leaf_modules)
    if data is not None:
        plan = search(gm, budget, data, loss_fn, config, search_config)  # type: ignore[arg-type]
    else:
        plan = make_plan(gm, budget, config)
    return rewrite(gm, plan)
