"""The sharing report: which slots share what, and where the parameters went."""
from __future__ import annotations

import torch.fx as fx
import torch.nn as nn

from ssnfx.core.errors import PlanError
from ssnfx.core.markers import require_store, store_of
from ssnfx.core.plan import SharingPlan
from ssnfx.lsm import identical_weights, layer_similarity
from ssnfx.passes.members import member_names

__all__ = ["report", "summary"]

#: Pairs listed in the layer-similarity section, and the |cos| from which a pair over the same
#: templates counts as near-identical (proportional weights: foldable into one layer).
_TOP_PAIRS = 5
_NEAR = 1e-3


def summary(shared: nn.Module) -> str:
    """One line on what trains, as peft's ``print_trainable_parameters``: the trainable and
    all parameters of the shared model, and where the trainable ones go (stores, coefficients,
    private) against the original's trainable parameters.

    Example:
        >>> import torch, ssnfx
        >>> shared = ssnfx.share(torch.nn.Sequential(torch.nn.Linear(64, 64)), 0.25)
        >>> print(ssnfx.summary(shared))  # doctest: +NORMALIZE_WHITESPACE
        trainable params: 1,040 || all params: 1,040 || trainable%: 100.00 || 25.00% of the
        original's 4,160 trainable (stores 972, coefficients 4, private 64; frozen 0)
    """
    plan: SharingPlan = require_store(shared, "summary", PlanError).plan
    params = list(shared.parameters())  # (each Parameter once, as parameters() gives them)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    stores = sum(g.numel for g in plan.groups)
    coefficients = sum(plan.coefficient_params(g) for g in plan.groups)
    return (f"trainable params: {trainable:,} || all params: {total:,} || trainable%: "
            f"{100 * trainable / max(total, 1):.2f} || {trainable / plan.trainable_params:.2%} "
            f"of the original's {plan.trainable_params:,} trainable (stores {stores:,}, "
            f"coefficients {coefficients:,}, private {plan.private_params:,}; frozen "
            f"{plan.frozen_params:,})")


def report(shared_or_plan: fx.GraphModule | SharingPlan) -> str:
    """A plain-text table of the plan: groups, their slots and SuperWeights, parameters before
    and after, each group's share of the budget; totals in parameters and bytes; then every
    shared slot with its shape, group, the SuperWeight tiles its weight is made of, and whether
    it is made just in time or batched.

    For a shared model (not a bare plan) it adds, for a model of several members, each member's
    slots and weights, and the layer similarity section (the soft-sharing poster): the most
    similar layer pairs by ``|cos(alpha_i, alpha_j)|`` (:func:`ssnfx.lsm.layer_similarity`), how
    many pairs over the same templates are near-identical, and which weights are exactly equal,
    so that :func:`ssnfx.fold` stores each of them once (:func:`ssnfx.lsm.identical_weights`).

    Example:
        >>> import torchvision, ssnfx
        >>> shared = ssnfx.share(torchvision.models.resnet18(), 0.1)
        >>> print(ssnfx.report(shared))  # doctest: +ELLIPSIS
        ssnfx plan: method ssn, combiner linear, ...
    """
    store = None if isinstance(shared_or_plan, SharingPlan) else store_of(shared_or_plan)
    plan = shared_or_plan if isinstance(shared_or_plan, SharingPlan) \
        else getattr(store, "plan", None)
    if plan is None:
        raise PlanError("report expects a SharingPlan or a shared model")
    slots = {s.name: s for s in plan.slots}
    lines = [f"ssnfx plan: method {plan.method}, combiner {plan.combiner}, "
             f"strategy {plan.options.strategy}, {len(plan.groups)} group(s), generation "
             f"{plan.options.generation}",
             f"{'group':<6} {'slots':>5} {'SWs':>4} {'weights':>14} {'store':>12} {'coef':>8} "
             f"{'ratio':>7} {'share':>7}  members"]
    for g in plan.groups:
        before = sum(slots[n].numel for n in g.slots)
        coef = plan.coefficient_params(g)
        members = ", ".join(g.slots[:3]) + (f", ... (+{len(g.slots) - 3})" if len(g.slots) > 3
                                            else "")
        lines.append(f"{g.name:<6} {len(g.slots):>5} {len(g.superweights):>4} {before:>14,} "
                     f"{g.numel:>12,} {coef:>8,} "
                     f"{(g.numel + coef) / before:>7.2%} {(g.numel + coef) / plan.budget:>7.2%}  "
                     f"{members}")
    private = plan.private_params
    frozen = [f"frozen (requires_grad=False, outside the budget): {plan.frozen_params:,}"] \
        if plan.frozen_params else []
    lines += [
        f"private (norms, biases, unshared): {private:,} ({private / plan.budget:.2%} of budget)",
        *frozen,
        f"original {plan.original_params:,} | budget {plan.budget:,} | shared "
        f"{plan.shared_params:,} ({plan.shared_params / plan.trainable_params:.2%} of the "
        f"trainable, "
        f"{4 * plan.shared_params / 2**20:.2f} MiB fp32) | folded {plan.original_params:,} "
        f"({4 * plan.original_params / 2**20:.2f} MiB fp32)",
        "columns: slots and SuperWeights (SWs) per group, the weights they generate, the store "
        "and coefficients that generate them, their ratio, and the group's share of the budget",
        "", f"{'slot':<44} {'shape':<20} {'group':<6} {'tiles':>5} {'weights':>12}  made"]
    for g in plan.groups:  # every slot, group by group: what each layer's weight is made of
        jit = set(plan.just_in_time(g))
        for name in g.slots:
            s = slots[name]
            lines.append(f"{name:<44} {str(tuple(s.shape)):<20} {g.name:<6} "
                         f"{len(g.layout[name]):>5} {s.numel:>12,}  "
                         f"{'just in time' if name in jit else 'batched'}")
    lines += _leaves(plan)
    if not isinstance(shared_or_plan, SharingPlan):
        lines += _members(shared_or_plan, plan) + _similarity(shared_or_plan)
    return "\n".join(lines)


def _leaves(plan: SharingPlan) -> list[str]:
    """The modules called as a whole (their parameters shared through functional_call): the
    user's, and those torch.fx could not trace, with the reason."""
    mine = plan.trace.get("leaf_modules", [])
    auto = plan.trace.get("auto_leaves", {})
    if not mine and not auto:
        return []
    lines = ["", "leaves (called as a whole; their parameters are still shared):"]
    lines += [f"  {name or '(the model itself)'}: given as a leaf" for name in mine]
    lines += [f"  {name or '(the model itself)'}: torch.fx cannot trace it: {why}"
              for name, why in auto.items()]
    return lines


def _members(shared: fx.GraphModule, plan: SharingPlan) -> list[str]:
    names = member_names(shared)
    if not names:
        return []
    parts = []
    for name in names:
        mine = [s for s in plan.slots if s.name.split(".")[0] == name]
        weights = sum(s.numel for s in mine if s.shared)
        parts.append(f"{name} ({sum(s.shared for s in mine)} shared slots, {weights:,} weights)")
    return [f"members ({len(names)}, one store): " + ", ".join(parts)]


def _similarity(shared: fx.GraphModule) -> list[str]:
    if any(p.is_meta for p in store_of(shared).parameters()):
        return ["layer similarity: not computed (the store holds no values: materialise the "
                "model and initialise it with ssnfx.core.initialization.initialize first)"]
    lsm = layer_similarity(shared)
    same = identical_weights(shared)
    lines = []
    if lsm is not None:
        top = lsm.pairs()[:_TOP_PAIRS]
        near = lsm.near_identical(_NEAR)
        comparable = len(lsm.pairs(same_templates=True))
        index = {n: i for i, n in enumerate(lsm.names)}
        mark = {(a, b): "*" if bool(lsm.same_templates[index[a], index[b]]) else ""
                for a, b, _ in top}
        lines += [f"layer similarity |cos(alpha_i, alpha_j)| over {len(lsm.names)} layers "
                  f"with learned coefficients; most similar (* same templates): " + (", ".join(
                      f"{a} ~ {b} {v:.3f}{mark[a, b]}" for a, b, v in top) or "none comparable"),
                  f"near-identical (|cos| >= {1 - _NEAR:g}, same templates): {len(near)} of "
                  f"{comparable} pair(s) over the same templates"]
    if same:
        lines.append(f"fold stores {len(same)} weight(s) once for {sum(len(s) for s in same)} "
                     f"layers ({sum(len(s) - 1 for s in same)} fewer tensors): "
                     + "; ".join(", ".join(s) for s in same))
    else:
        lines.append("fold stores every layer's weight on its own: no two are exactly equal")
    return lines
