"""Data-free grouping strategies: which shared slots draw on the same store.

Each strategy is one registered function ``(slots, n_groups, seed) -> list of groups`` (a group is
a list of slot names). The search pass (learned groups) produces the same structure from data.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from ssnfx.core.errors import PlanError
from ssnfx.core.plan import Slot
from ssnfx.core.registry import Registry

__all__ = ["STRATEGIES", "register_strategy", "group_slots", "auto_bins",
           "depth_groups_by_member"]

Strategy = Callable[[Sequence[Slot], int, int], list[list[str]]]
STRATEGIES: Registry[Strategy] = Registry("grouping strategy",
                                          "ssnfx.core.grouping.register_strategy")


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Register a grouping strategy under ``name`` (a decorator)."""
    def wrap(fn: Strategy) -> Strategy:
        return STRATEGIES.register(name, fn)
    return wrap


@register_strategy("single")
def single_group(slots: Sequence[Slot], n_groups: int, seed: int) -> list[list[str]]:
    """All shared slots in one group (SSN Table 1, SWN 'Single Cluster'), whatever the budget.

    Every layer then draws on the largest store the budget allows. With several groups, each
    store is a part of the budget (the planner gives each group its largest SuperWeight, then
    splits the rest in proportion to the groups' weights; below the sum of the largest
    SuperWeights, the stores are in proportion to them), which without data to guide the groups
    can leave a layer upsampled from a small store: on sklearn's digits at a 10% budget, the
    classifier's 2,560 weights come from 238 store parameters with three depth bins, and a small
    CNN reached 99.3% test accuracy with one group against 70.1% with three depth bins and 62.6%
    with one group per shape (benchmarks/RESULTS.md). Learned groups need data.
    """
    return [[s.name for s in slots]]


@register_strategy("auto")
def auto_groups(slots: Sequence[Slot], n_groups: int, seed: int) -> list[list[str]]:
    """The data-free default: one group (as ``"single"``) while the budget is one the
    configured P candidates per SuperWeight can cover; the planner splits it into depth bins
    when the budget would need more (:func:`auto_bins`). Without a budget, one group.
    """
    return single_group(slots, n_groups, seed)


def auto_bins(needed: int, candidates: int) -> int:
    """How many depth bins the ``"auto"`` strategy makes of a group whose store needs ``needed``
    candidates per SuperWeight where ``candidates`` (P) are configured: one while P suffices,
    else enough that each bin's store needs about P again.

    Why: a store larger than P times its SuperWeights makes every SuperWeight mix more
    candidates (on vit_b_16 at 100%, SWN's one group mixes 21 templates per tile), and
    generation costs a pass over each candidate: a step took 2.46x the unshared one where six
    depth bins of P = 4 take 1.42x (batch 2, benchmarks/results/speed.md). Where measured, the
    bins were also more accurate at such budgets: the byte LM at 100%, 2 bins, 2.165 bits per
    byte against one group's 2.210 (3 seeds, benchmarks/results/lm.md); SSN on ResNetFM(32) at
    100%, four depth bins 83.9% against one group's 82.3% (search_groups.md), where at 10% one
    group was best: SWN's "more templates or less sharing" (Sec. 3), chosen by the budget.

    Example:
        >>> auto_bins(4, 4), auto_bins(8, 4), auto_bins(21, 4)
        (1, 2, 6)
    """
    return -(-needed // candidates) if needed > candidates else 1


@register_strategy("depth")
def depth_groups(slots: Sequence[Slot], n_groups: int, seed: int) -> list[list[str]]:
    """Contiguous depth bins of about equal parameter count, in graph order.

    SSN Sec. 3.2 motivates groups by early layers (low-level features)
    conflicting with late ones and found 3 learned groups best for classification; SWN Table 3
    shows depth-binning as the strongest hand-made baseline. Bins of equal weight keep every
    group's store the same fraction of its layers, so no group is starved.
    """
    ordered = sorted(slots, key=lambda s: s.position)
    total = sum(s.numel for s in ordered)
    groups: list[list[str]] = [[] for _ in range(min(n_groups, len(ordered)))]
    seen = 0
    for s in ordered:
        # Bin by the midpoint of the slot's share of the cumulative weight.
        k = min(int((seen + s.numel / 2) * len(groups) / total), len(groups) - 1)
        groups[k].append(s.name)
        seen += s.numel
    return [g for g in groups if g]


def depth_groups_by_member(slots: Sequence[Slot], n_groups: int, members: Sequence[str]
                           ) -> list[list[str]]:
    """Depth bins of each member (its slots named ``"<member>.…"``) on its own, bin ``k`` of
    every member in one group, so that the members of a model of several
    (``ssnfx.share([m1, m2])``, SWN Sec. 4) still share every store; slots of no member join
    the first bin. With fewer than two members, :func:`depth_groups`.

    Example:
        >>> from ssnfx.core.plan import Slot
        >>> ss = [Slot(f"{m}.l{i}.weight", (8, 8), "weight", "Linear", 2 * j + i)
        ...       for j, m in enumerate("ab") for i in range(2)]
        >>> depth_groups_by_member(ss, 2, ["a", "b"])
        [['a.l0.weight', 'b.l0.weight'], ['a.l1.weight', 'b.l1.weight']]
    """
    if len(members) < 2:
        return depth_groups(slots, n_groups, 0)
    bins: list[list[str]] = [[] for _ in range(n_groups)]
    owned: set[str] = set()
    for m in members:
        mine = [s for s in slots if s.name.startswith(f"{m}.")]
        owned.update(s.name for s in mine)
        for k, group in enumerate(depth_groups(mine, n_groups, 0)):
            bins[k] += group
    bins[0] += [s.name for s in sorted(slots, key=lambda s: s.position) if s.name not in owned]
    return [b for b in bins if b]


@register_strategy("shape")
def shape_groups(slots: Sequence[Slot], n_groups: int, seed: int) -> list[list[str]]:
    """One group per distinct weight shape: the manual baseline of the papers (Savarese et al.)."""
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for s in sorted(slots, key=lambda s: s.position):
        by_shape.setdefault(s.shape, []).append(s.name)
    return list(by_shape.values())


@register_strategy("random")
def random_groups(slots: Sequence[Slot], n_groups: int, seed: int) -> list[list[str]]:
    """A seeded random assignment of slots to ``n_groups`` groups (the papers' 'Random')."""
    rng = random.Random(seed)
    k = min(n_groups, len(slots))
    names = [s.name for s in sorted(slots, key=lambda s: s.position)]
    # Every group gets at least one slot, the rest are drawn at random.
    order = names[:]
    rng.shuffle(order)
    assign = {n: i for i, n in enumerate(order[:k])}
    for n in order[k:]:
        assign[n] = rng.randrange(k)
    return [[n for n in names if assign[n] == g] for g in range(k)]


def group_slots(slots: Sequence[Slot], strategy: str, n_groups: int, seed: int) -> list[list[str]]:
    """Apply the strategy named ``strategy``.

    Example:
        >>> from ssnfx.core.plan import Slot
        >>> ss = [Slot(f"l{i}.weight", (8, 8), "weight", "Linear", i) for i in range(4)]
        >>> group_slots(ss, "depth", 2, 0)
        [['l0.weight', 'l1.weight'], ['l2.weight', 'l3.weight']]
    """
    if strategy not in STRATEGIES:
        raise PlanError(f"unknown grouping strategy {strategy!r}; known: {sorted(STRATEGIES)}")
    if not slots:
        return []
    return STRATEGIES[strategy](slots, n_groups, seed)
