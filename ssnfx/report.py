"""The sharing report: which slots share what, and where the parameters went."""
from __future__ import annotations

import torch.fx as fx

from .errors import PlanError
from .passes.rewrite import STORE
from .plan import SharingPlan

__all__ = ["report"]


def report(shared_or_plan: fx.GraphModule | SharingPlan) -> str:
    """A plain-text table of the plan: groups, their slots, parameters before and after.

    Example:
        >>> import torchvision, ssnfx
        >>> print(ssnfx.report(ssnfx.share(torchvision.models.resnet18(), 0.1)))  # doctest: +ELLIPSIS
        ssnfx plan: method ssn, combiner wavg, ...
    """
    plan = shared_or_plan if isinstance(shared_or_plan, SharingPlan) \
        else getattr(getattr(shared_or_plan, STORE, None), "plan", None)
    if plan is None:
        raise PlanError("report expects a SharingPlan or a shared model")
    slots = {s.name: s for s in plan.slots}
    lines = [f"ssnfx plan: method {plan.method}, combiner {plan.combiner}, "
             f"strategy {plan.hyper.get('strategy')}, {len(plan.groups)} group(s)",
             f"{'group':<6} {'slots':>5} {'weights':>14} {'store':>12} {'coef':>8} "
             f"{'ratio':>7} {'share':>7}  members"]
    for g in plan.groups:
        before = sum(slots[n].numel for n in g.slots)
        coef = plan.coefficient_params(g)
        members = ", ".join(g.slots[:3]) + (f", ... (+{len(g.slots) - 3})" if len(g.slots) > 3
                                            else "")
        lines.append(f"{g.name:<6} {len(g.slots):>5} {before:>14,} {g.numel:>12,} {coef:>8,} "
                     f"{(g.numel + coef) / before:>7.2%} {(g.numel + coef) / plan.budget:>7.2%}  "
                     f"{members}")
    private = plan.private_params
    lines += [
        f"private (norms, biases, unshared): {private:,} ({private / plan.budget:.2%} of budget)",
        f"original {plan.original_params:,} | budget {plan.budget:,} | shared "
        f"{plan.shared_params:,} ({plan.shared_params / plan.original_params:.2%}) | folded "
        f"{plan.original_params:,} ({4 * plan.original_params / 2**20:.1f} MiB fp32)"]
    return "\n".join(lines)
