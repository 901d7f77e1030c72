"""The sharing report: which slots share what, and where the parameters went."""
from __future__ import annotations

import torch.fx as fx

from .errors import PlanError
from .passes.rewrite import STORE
from .plan import SharingPlan

__all__ = ["report"]


def report(shared_or_plan: fx.GraphModule | SharingPlan) -> str:
    """A plain-text table of the plan: groups, their slots and SuperWeights, parameters before
    and after, each group's share of the budget; totals in parameters and bytes.

    Example:
        >>> import torchvision, ssnfx
        >>> shared = ssnfx.share(torchvision.models.resnet18(), 0.1)
        >>> print(ssnfx.report(shared))  # doctest: +ELLIPSIS
        ssnfx plan: method ssn, combiner wavg, ...
    """
    plan = shared_or_plan if isinstance(shared_or_plan, SharingPlan) \
        else getattr(getattr(shared_or_plan, STORE, None), "plan", None)
    if plan is None:
        raise PlanError("report expects a SharingPlan or a shared model")
    slots = {s.name: s for s in plan.slots}
    lines = [f"ssnfx plan: method {plan.method}, combiner {plan.combiner}, "
             f"strategy {plan.hyper.get('strategy')}, {len(plan.groups)} group(s)",
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
    lines += [
        f"private (norms, biases, unshared): {private:,} ({private / plan.budget:.2%} of budget)",
        f"original {plan.original_params:,} | budget {plan.budget:,} | shared "
        f"{plan.shared_params:,} ({plan.shared_params / plan.original_params:.2%}, "
        f"{4 * plan.shared_params / 2**20:.2f} MiB fp32) | folded {plan.original_params:,} "
        f"({4 * plan.original_params / 2**20:.2f} MiB fp32)",
        "columns: slots and SuperWeights (SWs) per group, the weights they generate, the store "
        "and coefficients that generate them, their ratio, and the group's share of the budget"]
    return "\n".join(lines)
