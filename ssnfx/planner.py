"""The planner: turns slots, groups and a parameter budget into a SharingPlan.

Budget arithmetic (the shared model's ``parameters()``):
``private + sum over groups of (store + coefficients) <= budget``, with the stores taking what the
private parameters and coefficients leave (see :func:`_split` for how groups share it). Rounding
down each store loses fewer parameters than there are groups, so the count lands within a
handful of the budget.
"""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch.fx as fx

from .config import ShareConfig
from .errors import BudgetError, PlanError
from .grouping import group_slots
from .passes.trace import slots_of
from .plan import GroupPlan, SharingPlan, Slot
from .selector import ssn_layout, swn_layout

__all__ = ["make_plan", "resolve_budget", "original_param_count", "MAX_BUDGET_RATIO"]

#: Budgets above this multiple of the model's parameters are refused as a likely mistake.
MAX_BUDGET_RATIO = 100.0


def original_param_count(gm: fx.GraphModule) -> int:
    """Parameters of the traced model (a tied parameter counts once), read or not."""
    read = sum(s.numel for s in slots_of(gm))
    unread = sum(t.numel() for t in gm.meta.get("ssnfx_unread", {}).values()
                 if t.__class__.__name__ == "Parameter")
    return read + unread


def resolve_budget(budget: Any, original: int) -> int:
    """A budget as an absolute parameter count: a float is a fraction, an int a count.

    Example:
        >>> resolve_budget(0.1, 1000), resolve_budget(250, 1000)
        (100, 250)
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise BudgetError(f"budget must be a float (fraction of the model's {original:,} "
                          f"parameters) or an int (a parameter count), got {budget!r}")
    if isinstance(budget, float):
        if not math.isfinite(budget) or budget <= 0:
            raise BudgetError(f"budget must be a finite fraction > 0, got {budget!r}")
        count = math.floor(budget * original)  # "at most": never round up past the fraction
    else:
        count = budget
    if count <= 0:
        raise BudgetError(f"budget must be positive, got {budget!r} (= {count} parameters)")
    if count > MAX_BUDGET_RATIO * original:
        raise BudgetError(f"budget {budget!r} is {count / original:.0f}x the model's {original:,} "
                          f"parameters; the most ssnfx accepts is {MAX_BUDGET_RATIO:g}x")
    return count


def _is_shared(s: Slot, config: ShareConfig, frozen: set[str]) -> bool:
    """Matrices are shared; vectors, norms, frozen and ``config.private`` parameters are not."""
    if any(fnmatch.fnmatchcase(n, pat) for n in (s.name, *s.aliases) for pat in config.private):
        return False
    if s.name in frozen or len(s.shape) == 0:
        return False
    if "Norm" in s.kind:
        return config.share_norms
    # A matrix has two dimensions above one; anything else (biases, per-channel layer scales of
    # shape (C, 1, 1), class tokens of shape (1, 1, D)) is a vector and private like a bias.
    return sum(d > 1 for d in s.shape) >= 2 or config.share_biases


def make_plan(gm: fx.GraphModule, budget: float | int, config: ShareConfig | None = None,
              groups: Sequence[Sequence[str]] | None = None,
              measured: dict[str, Any] | None = None) -> SharingPlan:
    """Build a SharingPlan for a traced model under a parameter budget.

    Args:
        gm: the output of :func:`ssnfx.trace`.
        budget: a float is a fraction of the model's parameters (0.01 to over 1.0), an int an
            absolute count.
        config: the :class:`ShareConfig`; defaults to ``ShareConfig()``.
        groups: lists of slot names forming the parameter groups (from the search pass); when
            omitted, ``config.strategy`` groups the shared slots without data.
        measured: what a search measured, recorded in the plan as is.

    Raises:
        BudgetError: the budget is malformed, or smaller than what the model needs at least
            (its private parameters, the coefficients and one store parameter per group).

    Example:
        >>> import torchvision, ssnfx
        >>> gm = ssnfx.trace(torchvision.models.resnet18())
        >>> plan = ssnfx.make_plan(gm, budget=0.1)
        >>> plan.shared_params <= plan.budget, len(plan.groups)
        (True, 1)
    """
    config = config or ShareConfig()
    original = original_param_count(gm)
    if original == 0:
        raise BudgetError(f"{type(gm).__name__} has no parameters: there is nothing to share")
    target = resolve_budget(budget, original)
    frozen = {n for n, p in gm.named_parameters() if not p.requires_grad}
    slots = [replace(s, shared=_is_shared(s, config, frozen)) for s in slots_of(gm)]
    shared = [s for s in slots if s.shared]
    if not shared:
        raise BudgetError(f"{type(gm).__name__} has no shareable parameters (weights of Linear, "
                          f"Conv, Embedding, attention or recurrent layers, or parameters used "
                          f"directly); set share_biases/share_norms or check ShareConfig.private")
    by_name = {s.name: s for s in shared}
    if groups is None:
        groups = group_slots(shared, config.strategy, config.groups, config.seed)
    _check_groups(groups, by_name)
    combiner = config.resolved_combiner
    plan = SharingPlan(
        method=config.method, combiner=combiner, budget=target, original_params=original,
        slots=slots, groups=[],
        hyper={"candidates": config.candidates, "emb_dim": config.emb_dim, "seed": config.seed,
               "strategy": config.strategy if measured is None else "search",
               "hard_sharing": config.hard_sharing},
        trace=dict(gm.meta.get("ssnfx_trace", {})),
        measured=dict(measured or {}))
    for i, names in enumerate(groups):
        members = sorted((by_name[n] for n in names), key=lambda s: s.position)
        if config.method == "ssn":
            sws, layout = ssn_layout(members)
        else:
            sws, layout = swn_layout(members, config.hard_sharing)
        # Hard sharing reserves a coefficient row per tile, for the refine step to untie.
        reserved = sum(len(t) for t in layout.values()) if config.hard_sharing else 0
        plan.groups.append(GroupPlan(name=f"g{i}", slots=[s.name for s in members], numel=0,
                                     candidates=config.candidates, superweights=sws,
                                     layout=layout, reserved=reserved))
    _allocate(plan, target)
    return plan


def _check_groups(groups: Sequence[Sequence[str]], by_name: dict[str, Slot]) -> None:
    seen: set[str] = set()
    for g in groups:
        if not g:
            raise PlanError("a parameter group is empty")
        for n in g:
            if n not in by_name:
                raise PlanError(f"group member {n!r} is not a shared slot of this model")
            if n in seen:
                raise PlanError(f"slot {n!r} is in more than one group")
            seen.add(n)
    missing = sorted(set(by_name) - seen)
    if missing:
        more = "..." if len(missing) > 5 else ""
        raise PlanError(f"shared slots in no group: {missing[:5]}{more}")


def _split(available: int, plan: SharingPlan) -> dict[str, int]:
    """Store sizes summing to at most ``available``.

    Each group first gets its largest SuperWeight, the least store that spares it any upsampling
    (SSN Table 3(c) sizes groups by their largest layer), and what remains is split in proportion
    to the weights the groups' slots represent (SSN Sec. 3.2). When even the largest SuperWeights
    do not fit, they share the budget in proportion to their sizes, so that every group is
    upsampled by the same factor instead of one group being starved.
    """
    slots = {s.name: s for s in plan.slots}
    weight = {g.name: sum(slots[n].numel for n in g.slots) for g in plan.groups}
    demand = {g.name: max(r * c for r, c in g.superweights) for g in plan.groups}
    need = sum(demand.values())
    if available < need:
        return {k: max(1, available * d // need) for k, d in demand.items()}
    extra, total = available - need, sum(weight.values())
    return {k: demand[k] + extra * weight[k] // total for k in demand}


def _allocate(plan: SharingPlan, target: int) -> None:
    """Size every group's store so the shared model's count is at most ``target``."""
    private = plan.private_params
    base = plan.hyper["candidates"]
    # First pass without coefficients: a store larger than P times what its SuperWeights cover
    # would leave parameters no selection ever reads, so P grows to cover it (budgets above 1).
    rough = _split(max(target - private, len(plan.groups)), plan)
    for g in plan.groups:
        covered = sum(r * c for r, c in g.superweights)
        g.candidates = max(base, math.ceil(rough[g.name] / covered))
    coefficients = sum(plan.coefficient_params(g) for g in plan.groups)
    available = target - private - coefficients
    if available < len(plan.groups):
        least = private + coefficients + len(plan.groups)
        raise BudgetError(
            f"budget of {target:,} parameters is below the least this model can be shared with: "
            f"{least:,} ({least / plan.original_params:.2%} of {plan.original_params:,}): "
            f"{private:,} private parameters (norms, biases, unshared) and {coefficients:,} "
            f"coefficients. Raise the budget, or share more (ShareConfig.share_biases / "
            f"share_norms), or use a combiner with fewer coefficients ('rr', 'avg').")
    for name, numel in _split(available, plan).items():
        next(g for g in plan.groups if g.name == name).numel = numel
