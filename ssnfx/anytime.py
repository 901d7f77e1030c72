"""Anytime inference from one store: run the subset of members that fits a latency budget
(SWN Sec. 4.2: Teterwak et al., "Learning to Compose SuperWeights for Neural Parameter Allocation
Search").

A heterogeneous ensemble of M members offers 2^M - 1 subsets, each with its own inference time:
members are evaluated in series, so a subset costs the sum of its members' costs. The functions
here measure the costs (:func:`member_costs`), score every subset on validation data
(:func:`subset_accuracy`), and choose the subset to run under a budget (:func:`anytime_subset`):

* without scores, the members are ordered by cost, cheapest first, and the subset is the longest
  prefix of that order that fits: the most members the budget allows (an ensemble of more members
  is usually more accurate, and taking the cheapest first maximises their number);
* with scores (e.g. validation accuracy of every subset), the subset is the highest-scoring one
  among all that fit, ties going to the cheaper.

:func:`anytime_frontier` lists the subsets worth running at all: each more accurate than every
cheaper one. Run the chosen subset with :func:`ssnfx.ensemble.ensemble` on the folded model.
"""
from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.fx as fx

from ssnfx.core.errors import EnsembleError
from ssnfx.ensemble import average_probabilities
from ssnfx.passes.members import member, member_names

__all__ = ["member_costs", "order_by_cost", "subset_accuracy", "anytime_subset",
           "anytime_frontier"]

Subset = tuple[str, ...]


@torch.no_grad()
def member_costs(model: fx.GraphModule, example_inputs: Any, names: Sequence[str] | None = None,
                 repeats: int = 10, warmup: int = 2,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Seconds one forward of each member takes on its own (:func:`ssnfx.ensemble.member`), in
    eval mode without gradients: the median of ``repeats`` runs after ``warmup``, the members
    interleaved so that a busy machine slows them alike. Measure the folded model: what is deployed.

    ``clock`` is wall time by default (the latency a caller sees); ``time.thread_time`` counts
    only this thread's CPU time, steadier on a machine shared with other jobs.

    Example:
        >>> import torch, ssnfx
        >>> folded = ssnfx.fold(ssnfx.share([torch.nn.Linear(8, 2), torch.nn.Linear(8, 2)], 0.5))
        >>> costs = ssnfx.anytime.member_costs(folded, torch.randn(4, 8), repeats=3)
        >>> sorted(costs), all(c > 0 for c in costs.values())
        (['0', '1'], True)
    """
    names = list(names) if names is not None else member_names(model)
    if not names:
        raise EnsembleError(f"{type(model).__name__} is not a model of several members: make one "
                            f"with ssnfx.share([m1, m2, ...]) and fold it")
    if repeats < 1:
        raise EnsembleError(f"repeats must be at least 1, got {repeats}")
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    alone = {n: member(model, n).eval() for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(warmup + repeats):
        for n, m in alone.items():
            start = clock()
            m(*inputs)
            if i >= warmup:
                times[n].append(clock() - start)
    return {n: statistics.median(t) for n, t in times.items()}


def order_by_cost(costs: Mapping[str, float]) -> list[str]:
    """Member names, cheapest first (ties keep the given order).

    Example:
        >>> order_by_cost({"wide": 3.0, "narrow": 1.0, "mid": 2.0})
        ['narrow', 'mid', 'wide']
    """
    return sorted(costs, key=lambda n: costs[n])


def _subsets(names: Sequence[str]) -> list[Subset]:
    return [s for k in range(1, len(names) + 1) for s in itertools.combinations(names, k)]


def subset_accuracy(logits: Mapping[str, torch.Tensor], targets: torch.Tensor
                    ) -> dict[Subset, float]:
    """Top-1 accuracy of every non-empty subset of members, each predicting by the mean of its
    members' softmax probabilities, from each member's logits over the same examples. Subsets
    are tuples of names in the order of ``logits``.

    Example:
        >>> import torch
        >>> y = torch.tensor([0, 1])
        >>> acc = subset_accuracy({"a": torch.tensor([[2., 0.], [2., 0.]]),
        ...                        "b": torch.tensor([[0., 1.], [0., 3.]])}, y)
        >>> acc[("a",)], acc[("b",)], acc[("a", "b")]
        (0.5, 0.5, 1.0)
    """
    if not logits:
        raise EnsembleError("subset_accuracy needs the logits of at least one member")
    out = {}
    for subset in _subsets(list(logits)):
        probs = average_probabilities([logits[n] for n in subset])
        out[subset] = float((probs.argmax(-1) == targets).float().mean())
    return out


def _lookup(scores: Mapping[Sequence[str], float]) -> dict[frozenset[str], float]:
    return {frozenset(k): float(v) for k, v in scores.items()}


def anytime_subset(costs: Mapping[str, float], budget: float,
                   scores: Mapping[Sequence[str], float] | None = None) -> Subset:
    """The members to run within ``budget`` (in the unit of ``costs``; a subset costs the sum of
    its members' costs, as members run one after another).

    Without ``scores``: the longest cheapest-first prefix of the members that fits. With
    ``scores`` (a score per subset, higher is better, such as :func:`subset_accuracy` on
    validation data; any order of names within a subset): the best-scoring subset that fits,
    the cheaper of equal scores. The result is in cost order.

    Raises:
        EnsembleError: not even the cheapest member fits the budget.

    Example:
        >>> costs = {"small": 1.0, "medium": 2.0, "large": 4.0}
        >>> anytime_subset(costs, 3.5)
        ('small', 'medium')
        >>> anytime_subset(costs, 5.0, {("large",): 0.9, ("small", "large"): 0.92,
        ...                             ("small",): 0.8, ("small", "medium"): 0.85})
        ('small', 'large')
    """
    if not costs:
        raise EnsembleError("anytime_subset needs the cost of at least one member")
    order = order_by_cost(costs)
    cheapest = order[0]
    if costs[cheapest] > budget:
        raise EnsembleError(f"no member fits the budget {budget:g}: the cheapest, {cheapest!r}, "
                            f"costs {costs[cheapest]:g}; raise the budget or add a cheaper member")
    if scores is None:
        chosen: list[str] = []
        total = 0.0
        for n in order:
            if total + costs[n] > budget:
                break
            chosen.append(n)
            total += costs[n]
        return tuple(chosen)
    known = _lookup(scores)
    fitting = [s for s in _subsets(order)
               if frozenset(s) in known and sum(costs[n] for n in s) <= budget]
    if not fitting:
        raise EnsembleError(f"none of the scored subsets fits the budget {budget:g}; score the "
                            f"single members too (ssnfx.anytime.subset_accuracy scores every "
                            f"subset)")
    return max(fitting, key=lambda s: (known[frozenset(s)], -sum(costs[n] for n in s)))


def anytime_frontier(costs: Mapping[str, float], scores: Mapping[Sequence[str], float]
                     ) -> list[tuple[Subset, float, float]]:
    """The subsets worth running, cheapest first, as ``(subset, cost, score)``: each scores
    higher than every cheaper subset (the Pareto front of the accuracy-time curve).

    Example:
        >>> costs = {"a": 1.0, "b": 2.0}
        >>> anytime_frontier(costs, {("a",): 0.8, ("b",): 0.7, ("a", "b"): 0.9})
        [(('a',), 1.0, 0.8), (('a', 'b'), 3.0, 0.9)]
    """
    known = _lookup(scores)
    rows = sorted(((s, sum(costs[n] for n in s), known[frozenset(s)])
                   for s in _subsets(order_by_cost(costs)) if frozenset(s) in known),
                  key=lambda r: (r[1], -r[2]))
    front: list[tuple[Subset, float, float]] = []
    for row in rows:
        if not front or row[2] > front[-1][2]:
            front.append(row)
    return front
