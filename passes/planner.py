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
import numbers
from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Any

import torch.fx as fx

from ssnfx.core.combiners import Combiner, get_combiner
from ssnfx.core.config import ShareConfig
from ssnfx.core.errors import BudgetError, PlanError
from ssnfx.core.grouping import auto_bins, depth_groups_by_member, group_slots
from ssnfx.core.layer_kinds import kind_of
from ssnfx.core.markers import Meta
from ssnfx.core.methods import METHOD_PREFERENCE, Method, get_method
from ssnfx.core.options import PlanOptions, own_options
from ssnfx.core.plan import GroupPlan, SharingPlan, Slot
from ssnfx.passes.members import member_names
from ssnfx.passes.tracing import as_traced, check_traced_parameters, slots_of

__all__ = ["make_plan", "resolve_method", "resolve_budget", "original_param_count",
           "frozen_param_count", "MAX_BUDGET_RATIO"]

#: The ShareConfig settings a plan records under the same names in its options.
_CONFIG_FIELDS = {f.name for f in fields(ShareConfig)}

#: Budgets above this multiple of the model's parameters are refused as a likely mistake.
MAX_BUDGET_RATIO = 100.0


def original_param_count(gm: fx.GraphModule) -> int:
    """Parameters of the traced model (a tied parameter counts once), read or not."""
    read = sum(s.numel for s in slots_of(gm))
    unread = sum(t.numel() for t in gm.meta.get(Meta.UNREAD, {}).values()
                 if t.__class__.__name__ == "Parameter")
    return read + unread


def frozen_param_count(gm: fx.GraphModule) -> int:
    """Parameters of the traced model with ``requires_grad=False`` (read or not), which stay
    frozen and outside the budget."""
    return sum(s.numel for s in slots_of(gm)
               if not gm.get_parameter(s.name).requires_grad) + sum(
        t.numel() for t in gm.meta.get(Meta.UNREAD, {}).values()
        if t.__class__.__name__ == "Parameter" and not t.requires_grad)


def resolve_budget(budget: Any, original: int) -> int:
    """A budget as an absolute parameter count: a float is a fraction, an int a count.

    Raises:
        BudgetError: the budget is not a number, not finite, not positive, rounds down to zero
            parameters, or exceeds :data:`MAX_BUDGET_RATIO` times the model.

    Example:
        >>> resolve_budget(0.1, 1000), resolve_budget(250, 1000)
        (100, 250)
    """
    usage = (f"pass a fraction of the model's {original:,} trainable parameters as a float (0.1 "
             f"keeps 10%) or a parameter count as an int")
    # numbers.Integral admits numpy's integers too (its floats subclass float); bool is an int to
    # Python but never a budget.
    if isinstance(budget, bool) or not isinstance(budget, (numbers.Integral, float)):
        raise BudgetError(f"budget must be a float or an int, got {type(budget).__name__} "
                          f"{budget!r}: {usage}")
    if isinstance(budget, float):
        if not math.isfinite(budget) or budget <= 0:
            raise BudgetError(f"budget must be a finite fraction > 0, got {budget!r}: {usage}")
        count = math.floor(budget * original)  # "at most": never round up past the fraction
    else:
        count = int(budget)
    if count <= 0:
        what = "must be positive" if budget <= 0 else "is less than one parameter"
        raise BudgetError(f"budget {what}, got {budget!r} (= {count} of the model's "
                          f"{original:,} parameters): {usage}")
    if count > MAX_BUDGET_RATIO * original:
        raise BudgetError(f"budget {budget!r} is {count / original:.0f}x the model's {original:,} "
                          f"parameters; the most ssnfx accepts is {MAX_BUDGET_RATIO:g}x "
                          f"({math.floor(MAX_BUDGET_RATIO * original):,}): was it meant as a "
                          f"fraction (a float such as 2.0 is twice the model) or a count?")
    return count


def _is_shared(s: Slot, config: ShareConfig, frozen: set[str]) -> bool:
    """Matrices are shared; vectors, norms, frozen and ``config.private`` parameters are not."""
    if any(fnmatch.fnmatchcase(n, pat) for n in (s.name, *s.aliases) for pat in config.private):
        return False
    if s.name in frozen or len(s.shape) == 0 or s.numel == 0:
        return False  # a 0-element parameter (Linear(16, 0)) has nothing to generate
    if kind_of(s).is_norm:
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
        budget: a float is a fraction of the model's trainable parameters (0.01 to over 1.0),
            an int an absolute count of trainable parameters. Frozen parameters
            (``requires_grad=False``) stay frozen, private and outside the budget.
        config: the :class:`ShareConfig`; defaults to ``ShareConfig()``.
        groups: lists of slot names forming the parameter groups (from the search pass); when
            omitted, ``config.strategy`` groups the shared slots without data.
        measured: what a search measured, recorded in the plan as is.

    Raises:
        BudgetError: the budget is malformed, or smaller than what the model needs at least
            (its private parameters, the coefficients and one store parameter per group).
        PlanError: ``groups`` do not cover the shared slots once each, or a parameter of ``gm``
            was replaced after tracing.

    Example:
        >>> import torchvision, ssnfx
        >>> gm = ssnfx.trace(torchvision.models.resnet18())
        >>> plan = ssnfx.make_plan(gm, budget=0.1)
        >>> plan.shared_params <= plan.budget, len(plan.groups)
        (True, 1)
    """
    config = config or ShareConfig()
    if config.method is None:
        return _first_that_fits(gm, budget, config, groups, measured)
    gm = as_traced(gm)
    check_traced_parameters(gm)
    original = original_param_count(gm)
    frozen_count = frozen_param_count(gm)
    if original == 0:
        raise BudgetError(f"{type(gm).__name__} has no parameters: there is nothing to share; "
                          f"pass the model whose parameters should be shared")
    if original == frozen_count:
        raise BudgetError(f"every parameter of {type(gm).__name__} is frozen "
                          f"(requires_grad=False): there is nothing to train or share; "
                          f"unfreeze the parameters to share (p.requires_grad_(True))")
    target = resolve_budget(budget, original - frozen_count)
    frozen = {n for n, p in gm.named_parameters() if not p.requires_grad}
    slots = [replace(s, shared=_is_shared(s, config, frozen)) for s in slots_of(gm)]
    shared = [s for s in slots if s.shared]
    _check_real(gm, shared)
    if not shared:
        raise BudgetError(f"{type(gm).__name__} has no shareable parameters (weights of Linear, "
                          f"Conv, Embedding, attention or recurrent layers, or parameters used "
                          f"directly, with two dimensions above 1 and requires_grad); set "
                          f"share_biases/share_norms, check ShareConfig.private, or unfreeze "
                          f"the parameters to share")
    by_name = {s.name: s for s in shared}
    auto = groups is None and config.strategy == "auto"
    if groups is None:
        groups = group_slots(shared, config.strategy, config.resolved_groups, config.seed)
    _check_groups(groups, by_name)
    combiner = config.resolved_combiner
    # A combiner that always selects a fixed number of candidates says so (RR reads one block
    # per SuperWeight, the next block for the next one: SSN Sec. 3.1.1).
    candidates = get_combiner(combiner).candidates or config.candidates
    method, mixer = get_method(config.method), get_combiner(combiner)
    _check_declared(config, method, mixer)
    # The method's settings that depend on the budget (SWN's tile), decided once for the plan.
    private = original - frozen_count - sum(s.numel for s in shared)
    config = method.resolve(config, shared, target - private)
    # The method's and the combiner's own settings, from config.options and their defaults.
    components = {**own_options(method, config.options), **own_options(mixer, config.options)}
    plan = SharingPlan(
        method=config.method, combiner=combiner, budget=target, original_params=original,
        frozen_params=frozen_count, slots=slots, groups=[],
        # The options are the config's settings of the same names, as planned (the others
        # take their defaults).
        options=PlanOptions(**{
            **{f.name: getattr(config, f.name) for f in fields(PlanOptions)
               if f.name in _CONFIG_FIELDS},
            "components": components,
            "candidates": candidates,
            "strategy": config.strategy if measured is None else "search",
            "refine_at": config.refine_at if method.reserves_rows(config) else None}),
        trace=dict(gm.meta.get(Meta.TRACE, {})),
        measured=dict(measured or {}))
    _fill(plan, groups, by_name, method, config, candidates, target)
    bins = auto_bins(plan.groups[0].candidates, candidates) if auto else 1
    if bins > 1:
        # The budget needs more candidates than P in one group: depth bins instead (see
        # auto_bins); a split the budget cannot hold keeps the one group.
        single = plan.groups
        try:
            _fill(plan, depth_groups_by_member(shared, bins, member_names(gm)), by_name,
                  method, config, candidates, target)
        except BudgetError:
            plan.groups = single
    return plan


def _fill(plan: SharingPlan, groups: Sequence[Sequence[str]], by_name: dict[str, Slot],
          method: Method, config: ShareConfig, candidates: int, target: int) -> None:
    """Set ``plan.groups`` to ``groups`` laid out by ``method`` and sized within ``target``."""
    plan.groups = []
    for i, names in enumerate(groups):
        members = sorted((by_name[n] for n in names), key=lambda s: s.position)
        sws, layout = method.layout(members, config)
        # The method says whether it reserves a coefficient row per tile for refine to untie
        # (SWN with hard sharing).
        reserved = sum(len(t) for t in layout.values()) if method.reserves_rows(config) else 0
        plan.groups.append(GroupPlan(name=f"g{i}", slots=[s.name for s in members], numel=0,
                                     candidates=candidates, superweights=sws,
                                     layout=layout, reserved=reserved,
                                     selection=config.selection))
    _allocate(plan, target)


def _first_that_fits(gm: fx.GraphModule, budget: float | int, config: ShareConfig,
                     groups: Sequence[Sequence[str]] | None,
                     measured: dict[str, Any] | None) -> SharingPlan:
    """The plan of the first method of METHOD_PREFERENCE whose least budget ``budget`` meets
    and which suits the model (:meth:`ssnfx.core.methods.Method.suits`); the last one's plan
    otherwise, or its BudgetError (SSN's: the lowest least budget)."""
    # Only methods that declare the settings given for a method (SWN's tile, say) are
    # candidates: those settings say which method the user has in mind.
    *preferred, last = [name for name in METHOD_PREFERENCE if _declares(config, name)] \
        or METHOD_PREFERENCE
    for name in preferred:
        try:
            plan = make_plan(gm, budget, replace(config, method=name), groups, measured)
        except BudgetError:
            continue  # below this method's least budget: the next one
        if get_method(name).suits(plan):
            return plan
    return make_plan(gm, budget, replace(config, method=last), groups, measured)


def resolve_method(gm: fx.GraphModule, budget: float | int, config: ShareConfig
                   ) -> ShareConfig:
    """``config`` with its method decided: as named, or for ``method=None`` the one
    :func:`make_plan` takes at ``budget`` (:data:`ssnfx.core.methods.METHOD_PREFERENCE`).

    Example:
        >>> import torch, torchvision, ssnfx
        >>> mlp = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64))
        >>> resolve_method(ssnfx.trace(mlp), 0.1, ssnfx.ShareConfig()).method
        'swn'
        >>> gm = ssnfx.trace(torchvision.models.mobilenet_v3_small())  # SWN: 70+ tiles a layer
        >>> resolve_method(gm, 0.1, ssnfx.ShareConfig()).method
        'ssn'
    """
    if config.method is not None:
        return config
    return replace(config, method=make_plan(gm, budget, config).method)


def _undeclared(config: ShareConfig, method: Method, combiner: Combiner) -> list[str]:
    """The settings of ``config.options`` that neither ``method`` nor ``combiner`` declares."""
    return sorted(set(config.options) - {*method.options, *combiner.options})


def _declares(config: ShareConfig, name: str) -> bool:
    """Whether method ``name`` and the combiner it would use declare every setting of
    ``config.options``."""
    method = get_method(name)
    return not _undeclared(config, method,
                           get_combiner(config.combiner or method.default_combiner))


def _check_declared(config: ShareConfig, method: Method, combiner: Combiner) -> None:
    """A setting of ``config.options`` neither component declares is an error naming what
    they do declare."""
    unknown = _undeclared(config, method, combiner)
    if unknown:
        raise PlanError(f"ShareConfig.options {unknown} are settings of neither method "
                        f"{method.name!r} nor combiner {combiner.name!r} (theirs: "
                        f"{sorted({*method.options, *combiner.options}) or 'none'})")


def _check_real(gm: fx.GraphModule, shared: Sequence[Slot]) -> None:
    """Generated weights are real: refuse a complex parameter the plan would share."""
    for s in shared:
        p = gm.get_parameter(s.name)
        if p.is_complex():
            raise PlanError(
                f"parameter {s.name!r} of {type(gm).__name__} is {p.dtype}: ssnfx cannot share "
                f"complex parameters (the weight generators resize and mix real templates; "
                f"torch has no complex bilinear resize). Keep it private with "
                f"ShareConfig(private=[{s.name!r}]), or store it as real pairs "
                f"(torch.view_as_real) in the model")


def _check_groups(groups: Sequence[Sequence[str]], by_name: dict[str, Slot]) -> None:
    seen: set[str] = set()
    for i, g in enumerate(groups):
        if not g:
            raise PlanError(f"parameter group {i} is empty; remove it, or give it slots")
        for n in g:
            if n not in by_name:
                raise PlanError(f"group member {n!r} (group {i}) is not a shared slot of this "
                                f"model; the shared slots are {sorted(by_name)[:5]}"
                                f"{'...' if len(by_name) > 5 else ''}")
            if n in seen:
                raise PlanError(f"slot {n!r} is in more than one group (again in group {i}); "
                                f"put each slot in one group")
            seen.add(n)
    missing = sorted(set(by_name) - seen)
    if missing:
        more = "..." if len(missing) > 5 else ""
        raise PlanError(f"shared slots in no group: {missing[:5]}{more}; every shared slot "
                        f"needs a group (or make it private with ShareConfig.private)")


def _apportion(total: int, weights: dict[str, int]) -> dict[str, int]:
    """``total`` split in proportion to ``weights``, summing to exactly ``total`` (largest
    remainders get the units that flooring leaves over)."""
    whole = sum(weights.values())
    shares = {k: total * w // whole for k, w in weights.items()}
    by_remainder = sorted(weights, key=lambda k: -(total * weights[k] % whole))
    for k in by_remainder[: total - sum(shares.values())]:
        shares[k] += 1
    return shares


def _split(available: int, plan: SharingPlan) -> dict[str, int]:
    """Store sizes summing to ``available`` (at least one parameter per group), by the plan's
    ``options.split`` (:data:`ssnfx.core.config.SPLITS`):

    * ``"largest-first"`` (SWN's reference code): each group first gets its largest SuperWeight,
      the least store that spares it any upsampling (SSN Table 3(c) sizes groups by their
      largest layer), and what remains is split in proportion to the weights the groups' slots
      represent. When even the largest SuperWeights do not fit, they share the budget in
      proportion to their sizes, so that every group is upsampled by the same factor instead of
      one group being starved.
    * ``"proportional"`` (SSN Sec. 3.2): in proportion to the weights the groups' slots
      represent, whatever that leaves a group.
    """
    slots = {s.name: s for s in plan.slots}
    weight = {g.name: sum(slots[n].numel for n in g.slots) for g in plan.groups}
    demand = {g.name: max(r * c for r, c in g.superweights) for g in plan.groups}
    need = sum(demand.values())
    # The split is exact, not floored per group: flooring lost up to one parameter per group,
    # which a small model's budget (a few dozen parameters, several groups) cannot spare and
    # still land within 95% of it.
    if plan.options.split == "proportional":
        # One parameter per group first: flooring each share could leave a group none.
        extra = _apportion(available - len(weight), weight)
        return {k: 1 + extra[k] for k in weight}
    if available < need:
        # One parameter per group first: flooring each share could leave a group none.
        extra = _apportion(available - len(demand), demand)
        return {k: 1 + extra[k] for k in demand}
    extra = _apportion(available - need, weight)
    return {k: demand[k] + extra[k] for k in demand}


def _allocate(plan: SharingPlan, target: int) -> None:
    """Size every group's store so the shared model's count is at most ``target``."""
    private = plan.private_params
    base = plan.options.candidates
    # First pass without coefficients: a store larger than P times what its SuperWeights cover
    # would leave parameters no selection ever reads, so P grows to cover it (budgets above 1).
    # Necessary, not sufficient: selections take whole blocks, so a store that is not a whole
    # number of a SuperWeight's blocks keeps a tail no selection reads (see select_blocks).
    # Each candidate also costs coefficients, counted here: growing P by the store alone could
    # spend more on coefficients than the budget holds when a group's coefficient rows are as
    # many as its SuperWeights' parameters (tiny layers).
    rough = _split(max(target - private, len(plan.groups)), plan)
    # A combiner with a fixed P (RR) reads that many blocks whatever the store; resized
    # candidates split the whole store whatever P is.
    fixed_p = get_combiner(plan.combiner).candidates is not None
    for g in [g for g in plan.groups if g.selection == "blocks" and not fixed_p]:
        covered = sum(r * c for r, c in g.superweights)
        per_candidate = plan.coefficient_params(replace(g, candidates=g.candidates + 1)) \
            - plan.coefficient_params(g)
        fixed = plan.coefficient_params(g) - per_candidate * g.candidates
        g.candidates = max(base, math.ceil(max(0, rough[g.name] - fixed)
                                           / (covered + per_candidate)))
    available = target - private - sum(plan.coefficient_params(g) for g in plan.groups)
    if available < len(plan.groups):
        # Growing P must never refuse a budget the configured P fits, nor make the least
        # budget below (which assumes the configured P) a wrong promise.
        for g in plan.groups:
            g.candidates = base
    coefficients = sum(plan.coefficient_params(g) for g in plan.groups)
    available = target - private - coefficients
    if available < len(plan.groups):
        least = private + coefficients + len(plan.groups)
        cap = math.floor(MAX_BUDGET_RATIO * plan.trainable_params)
        beyond = (f" That is more than the {MAX_BUDGET_RATIO:g}x the model that ssnfx accepts "
                  f"({cap:,}), so no budget can share this model with these settings: "
                  f"use a combiner with fewer coefficients ('rr', 'avg') or share more "
                  f"(ShareConfig.share_biases / share_norms).") if least > cap else ""
        frozen = (f" (The {plan.frozen_params:,} frozen parameters are outside the budget and "
                  f"not counted here.)") if plan.frozen_params else ""
        raise BudgetError(
            f"budget of {target:,} parameters is below the least this model can be shared with: "
            f"{least:,} ({least / plan.trainable_params:.2%} of its {plan.trainable_params:,} "
            f"trainable parameters): {private:,} private parameters (norms, biases, "
            f"unshared) and {coefficients:,} coefficients. Raise the budget, or share more "
            f"(ShareConfig.share_biases / share_norms), or use a combiner with fewer "
            f"coefficients ('rr', 'avg').{beyond}{frozen}")
    for name, numel in _split(available, plan).items():
        next(g for g in plan.groups if g.name == name).numel = numel
