"""refine: untie coefficients whose layers pull apart (SWN Sec. 2.2.2, Eq. 3).

A training-time step. After E epochs of training a hard-shared model (SWN uses E = 10), the tiles
that share one coefficient row are compared by the gradient each of them, on its own, sends to
that row: ``d_u = [<dL/dW_u, candidate_j>]_j`` for tile use *u* (the gradient with respect to the
row's mixing weights, attributed per slot, not the summed gradient that all uses share), summed
over the window of ``steps`` batches; uses are compared by the cosine of those sums, as SWN's
statistic aggregates gradients over the window, and merged by the priority queue of Sec.
2.2.1 with threshold beta (0.9, the SWN reference code's value): each resulting cluster beyond
the first gets its own copy of the row and keeps sharing the templates. The rows were reserved
when the plan was made, so refining adds no parameter: the budget holds and the optimizer keeps
its parameters. The model's function is unchanged at the moment of the split: the copies start
equal, and the measurement's forward passes (in the model's mode, as training computes them)
leave no trace in the buffers, which are restored (BatchNorm's running statistics).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ssnfx.core.batches import losses
from ssnfx.core.errors import PlanError
from ssnfx.core.markers import require_store
from ssnfx.core.plan import SharingPlan, Tile
from ssnfx.passes.clustering import pair_graph, superweight_clusters

__all__ = ["RefineResult", "refine"]


@dataclass
class RefineResult:
    """What :func:`refine` did.

    Attributes:
        plan: the refined plan (also ``shared.ssnfx.plan``).
        untied: for each split coefficient row (``"group/row"``), the slot-tile uses of each
            resulting cluster (``"slot#tile"``), the first keeping the original row.
        similarity: the cosines between the uses' summed gradients, for every shared row
            that was examined.
        new_parameters: parameters the optimizer must take: none, since rows were reserved.
    """

    plan: SharingPlan
    untied: dict[str, list[list[str]]] = field(default_factory=dict)
    similarity: dict[str, list[list[float]]] = field(default_factory=dict)
    new_parameters: list[nn.Parameter] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.untied)


def _shared_rows(plan: SharingPlan) -> dict[tuple[str, int], list[tuple[str, int]]]:
    """Coefficient rows used by tiles of more than one slot: ``(group, row) -> [(slot, tile)]``."""
    uses: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for g in plan.groups:
        for slot, tiles in g.layout.items():
            for t_index, t in enumerate(tiles):
                uses.setdefault((g.name, t.coefficients), []).append((slot, t_index))
    return {k: v for k, v in uses.items() if len({s for s, _ in v}) > 1}


def refine(shared: fx.GraphModule, data: Iterable[Any], loss_fn: Callable[..., torch.Tensor],
           steps: int = 10, beta: float = 0.9) -> RefineResult:
    """Give diverging users of a hard-shared coefficient row their own copy (SWN Eq. 3).

    Args:
        shared: a model from :func:`ssnfx.share`, typically SWN with its option
            ``hard_sharing`` on and trained for a few epochs. Its plan is changed in place; its
            buffers are not.
        data: ``(inputs, targets)`` batches; ``steps`` of them are used for the measurement.
        loss_fn: as for training.
        steps: batches whose gradients are summed before the uses are compared.
        beta: uses whose gradient sums have a cosine that does not exceed it are split apart.
            The paper leaves its value to a grid search; 0.9 is its reference code's, 0 splits
            only uses whose gradients point in opposed directions.

    Returns:
        A :class:`RefineResult`. Gradients already in ``.grad`` are left untouched.

    Example:
        >>> import torch, ssnfx
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
        >>> cfg = ssnfx.ShareConfig(method="swn", options={"hard_sharing": True})
        >>> shared = ssnfx.share(net, 0.5, cfg)
        >>> batches = [(torch.randn(4, 8), torch.randn(4, 8))]
        >>> result = ssnfx.refine(shared, batches, torch.nn.functional.mse_loss, steps=2)
        >>> result.new_parameters, sum(p.numel() for p in shared.parameters()) <= 280
        ([], True)
    """
    store = require_store(shared, "refine", PlanError)
    plan: SharingPlan = store.plan
    rows = _shared_rows(plan)
    if not rows:
        plan.measured.setdefault("refined", []).append(
            {"steps": 0, "beta": beta, "rows": 0, "untied": 0})
        return RefineResult(plan)
    groups = {g.name: g for g in plan.groups}
    grads: dict[tuple[str, int], torch.Tensor] = {}
    generators = {g.name: getattr(store, g.name) for g in plan.groups}
    for name, gen in generators.items():
        gen.hook = lambda i, g, name=name: grads.__setitem__((name, i), g.detach())
    totals: dict[tuple[str, int], torch.Tensor] = {}
    params = [p for p in store.parameters() if p.requires_grad]
    buffers = {name: b.detach().clone() for name, b in shared.named_buffers()}
    try:
        for _, loss in losses(shared, data, loss_fn, steps, "refine"):
            torch.autograd.grad(loss, params, allow_unused=True)  # fills grads via the hooks
            with torch.no_grad():
                for key, uses in rows.items():
                    v = _use_gradients(key, uses, groups, generators, grads)
                    totals[key] = totals[key] + v if key in totals else v
            grads.clear()
    finally:
        for gen in generators.values():
            gen.hook = None
        with torch.no_grad():  # the measurement is no training step: statistics stay as they were
            for name, b in shared.named_buffers():
                b.copy_(buffers[name])

    new_plan = copy.deepcopy(plan)
    result = RefineResult(new_plan)
    for key, uses in rows.items():
        v = F.normalize(totals[key].float(), dim=1)
        cos = v @ v.T
        labels = [f"{s}#{t}" for s, t in uses]
        result.similarity[f"{key[0]}/{key[1]}"] = [[round(float(v), 4) for v in r] for r in cos]
        clusters = superweight_clusters(pair_graph(labels, cos), beta)
        if len(clusters) > 1:
            _untie(new_plan, key, uses, labels, clusters, generators[key[0]])
            result.untied[f"{key[0]}/{key[1]}"] = clusters
    # Recorded, changed or not, so that a training schedule refines once (ssnfx.training).
    record = {"steps": steps, "beta": beta, "rows": len(rows), "untied": len(result.untied)}
    if not result.changed:  # the plan stays the same object
        plan.measured.setdefault("refined", []).append(record)
        return RefineResult(plan, similarity=result.similarity)
    new_plan.measured.setdefault("refined", []).append(record)
    slots = {s.name: s for s in new_plan.slots}
    for g in new_plan.groups:
        generators[g.name]._build(g, slots)
    store.plan = new_plan
    return result


def _use_gradients(key: tuple[str, int], uses: list[tuple[str, int]], groups: dict[str, Any],
                   generators: dict[str, nn.Module], grads: dict[tuple[str, int], torch.Tensor]
                   ) -> torch.Tensor:
    """The gradient each use of a coefficient row sends to it, one row per use."""
    group, row = key
    plan_group, gen = groups[group], generators[group]
    vectors = []
    for slot, t_index in uses:
        tile = plan_group.layout[slot][t_index]
        rows_, cols = plan_group.superweights[tile.superweight]
        g = grads.get((group, plan_group.slots.index(slot)))
        cands = gen.candidates_of(tile.superweight, row)
        if g is None:
            vectors.append(torch.zeros(cands.shape[0]))
            continue
        matrix = g.reshape(g.shape[0], -1) if g.dim() > 1 else g.reshape(-1, 1)
        region = matrix[tile.row: tile.row + rows_, tile.col: tile.col + cols]
        vectors.append(cands.reshape(cands.shape[0], -1) @ region.reshape(-1))
    return torch.stack(vectors)


def _untie(plan: SharingPlan, key: tuple[str, int], uses: list[tuple[str, int]],
           labels: list[str], clusters: list[list[str]], gen: nn.Module) -> None:
    group = next(g for g in plan.groups if g.name == key[0])
    used = {t.coefficients for tiles in group.layout.values() for t in tiles}
    free = [r for r in range(group.num_coefficients) if r not in used]
    where = dict(zip(labels, uses))
    for cluster in clusters[1:]:
        if not free:
            raise PlanError(f"group {group.name} has no reserved coefficient row left to untie "
                            f"into; make the plan with "
                            "ShareConfig(method='swn', options={'hard_sharing': True})")
        new = free.pop(0)
        for label in cluster:
            slot, t_index = where[label]
            t = group.layout[slot][t_index]
            group.layout[slot][t_index] = Tile(t.superweight, t.row, t.col, new)
        with torch.no_grad():  # the copy starts equal, so the model's function is unchanged
            for name in gen.combiner.row_parameters:
                coef = getattr(gen, name)
                coef[new] = coef[key[1]]
