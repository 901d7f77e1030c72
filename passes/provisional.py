"""The provisional model of SSN's search (Sec. 3.2): one group, P equal candidates, resized.

Every slot a config shares goes into one group of ``selection="resized"`` whose store, sized on
its own (:func:`search_store`), is split into P equal, non-overlapping candidates that every
slot bilinearly resizes, up or down, to its weight's shape and mixes with its coefficients (Emb
by default): the same :class:`~ssnfx.core.generator.GroupGenerator` final models use, so what
the search measures is what is trained.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch.fx as fx

from ssnfx.core.combiners import get_combiner
from ssnfx.core.config import ShareConfig
from ssnfx.core.errors import BudgetError
from ssnfx.core.plan import SharingPlan
from ssnfx.passes.planner import MAX_BUDGET_RATIO, make_plan
from ssnfx.passes.rewriting import rewrite

__all__ = ["provisional_model", "search_store"]


def provisional_model(gm: fx.GraphModule, config: ShareConfig, combiner: str = "emb",
                      store: float | int = 1.0) -> fx.GraphModule:
    """The model the SSN search trains (SSN Sec. 3.2): ``gm`` rewritten with every slot that
    ``config`` shares in one group of ``selection="resized"``, its store (:func:`search_store`
    of ``store``) split into ``config.candidates`` equal candidates that every slot resizes and
    mixes with ``combiner`` (``SearchConfig.combiner``, Emb by default).

    Example:
        >>> import torch, ssnfx
        >>> from ssnfx.passes.provisional import provisional_model
        >>> net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 4))
        >>> model = provisional_model(ssnfx.trace(net), ssnfx.ShareConfig())
        >>> model(torch.randn(2, 64)).shape, model.ssnfx.g0.combiner.name
        (torch.Size([2, 4]), 'emb')
        >>> group = model.ssnfx.plan.groups[0]
        >>> group.selection, group.numel == 64 * 64 + 64 * 4  # store=1.0: the weights' size
        ('resized', True)
    """
    # The user's settings (what is shared, candidates, seed, ...) with SSN's search model's own;
    # of the components' own settings only the search combiner's (the user's method's are not
    # SSN's, and the planner refuses settings its components do not declare).
    own = {k: v for k, v in config.options.items() if k in get_combiner(combiner).options}
    share = replace(config, method="ssn", combiner=combiner, strategy="single", groups=None,
                    selection="resized", generation="batched", options=own)
    try:
        whole = make_plan(gm, 1.0, share)
    except BudgetError:  # coefficients above the model's size (a tiny model)
        whole = make_plan(gm, float(MAX_BUDGET_RATIO), share)
    # The store is the search's own size: the budget is what that store and the group's
    # coefficients and the private parameters come to.
    coefficients = whole.coefficient_params(whole.groups[0])
    size = search_store(whole, store)
    return rewrite(gm, make_plan(gm, whole.private_params + coefficients + size, share))


def search_store(plan: SharingPlan, store: float | int) -> int:
    """The provisional store's size: ``store`` (``SearchConfig.store``) as a count, a float read
    as a fraction of the weights the plan's shared slots represent; at least one parameter per
    candidate.

    Example:
        >>> import torch, ssnfx
        >>> plan = ssnfx.make_plan(ssnfx.trace(torch.nn.Linear(10, 10)), 0.5)
        >>> search_store(plan, 0.5), search_store(plan, 30)
        (50, 30)
    """
    weights = sum(s.numel for s in plan.slots if s.shared)
    count = store if isinstance(store, int) else math.floor(store * weights)
    return max(count, plan.groups[0].candidates)
