"""What a search measures while its model trains: gradient statistics per layer, summed over
the measured steps (and over ranks under torch.distributed).

* :class:`CoefficientGradients`: the gradient each slot sends to its mixing coefficients over
  its group's candidates, ``d_i = [<dL/dW_i, C_k>]_k``; on the search's provisional model, where
  every slot mixes the same P candidates (SSN Sec. 3.2), these are over one basis and comparable.
* :class:`SuperWeightGradients`: SWN Eq. 2, the gradients two slots send to the SuperWeights they
  share, on a hard-shared SWN model (SWN Sec. 2.2.1).
* :class:`GradientCovariation`: how the sizes of two slots' weight gradients rise and fall
  together from step to step (the correlation of their logarithms): layers that serve the same
  loss on the same inputs move together, layers of unrelated tasks do not (this project's
  statistic; ``benchmarks/bench_conflict.py``).
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ssnfx.core.generator import GroupGenerator
from ssnfx.core.plan import GroupPlan, Slot

__all__ = ["CoefficientGradients", "SuperWeightGradients", "GradientCovariation"]


class CoefficientGradients:
    """Per slot, the gradient of its row of the generator's mixing weights (the slot's weight is
    ``sum_k mix_k C_k``, so it is ``[<dL/dW_i, C_k>]_k``), summed over the measured steps.

    Hooked onto a :class:`~ssnfx.core.generator.GroupGenerator` in batched generation (its
    ``mixing_hook``); a row's gradient goes to the slot that owns it.
    """

    def __init__(self, generator: GroupGenerator) -> None:
        self.generator = generator
        self.owner = generator.mix_owner.detach().cpu()
        n, p = len(generator.names), generator.mix_kept.shape[1]
        self.grad: torch.Tensor | None = None
        self.total = torch.zeros(n, p, dtype=torch.float64)
        self.bad = torch.zeros(n, dtype=torch.bool)  # slots with non-finite gradients
        generator.mixing_hook = self.record

    def record(self, grad: torch.Tensor) -> None:
        g = grad.detach().float().cpu()
        self.grad = g if self.grad is None else self.grad + g

    def step(self, measure: bool = True) -> None:
        """Attribute the step's gradient to the slots; add it to the total when ``measure``."""
        d = torch.zeros(self.total.shape, dtype=torch.float32)
        if self.grad is not None:
            d.index_add_(0, self.owner, self.grad)
        self.grad = None
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(d)  # the global gradient: every rank measures the same thing
        self.bad = ~torch.isfinite(d).all(dim=1)
        if measure:
            self.total += d.double()

    def non_finite(self, names: list[str]) -> list[str]:
        """The slots whose gradient was not finite at the last step."""
        return [n for n, bad in zip(names, self.bad.tolist()) if bad]

    def similarity(self) -> torch.Tensor:
        """The cosines between the slots' summed gradients."""
        unit = F.normalize(self.total, dim=1)
        return (unit @ unit.T).float()

    def close(self) -> None:
        self.generator.mixing_hook = None


class SuperWeightGradients:
    """Per slot, the gradient of its weight (its matrix view) summed over the search steps; the
    gradient a slot sends to a SuperWeight is the region of its tiles of that SuperWeight."""

    def __init__(self, group: GroupPlan, slots: dict[str, Slot]) -> None:
        self.group = group
        self.totals = [torch.zeros(slots[n].matrix, dtype=torch.float64) for n in group.slots]
        self.grads: dict[int, torch.Tensor] = {}

    def record(self, i: int, grad: torch.Tensor) -> None:
        self.grads[i] = grad.detach()

    def step(self, measure: bool = True) -> list[str]:
        """Add the step's gradients (when ``measure``); returns the slots whose gradient was
        not finite."""
        bad = []
        with torch.no_grad():
            for i, g in self.grads.items():
                g = g.reshape(self.totals[i].shape)
                if not torch.isfinite(g).all():
                    bad.append(self.group.slots[i])
                if measure:
                    self.totals[i] += g
        self.grads.clear()
        return bad

    def similarity(self, names: list[str]) -> torch.Tensor:
        """Eq. 2 for every pair of ``names``: the cosine between the two slots' summed gradients
        over the SuperWeights both use (0 where they share none)."""
        if dist.is_available() and dist.is_initialized():
            for t in self.totals:  # the sums of every rank's gradients
                dist.all_reduce(t)
        index = {n: i for i, n in enumerate(names)}
        n, k = len(names), len(self.group.superweights)
        dot = torch.zeros(n, n, dtype=torch.float64)
        sq = torch.zeros(k, n, dtype=torch.float64)   # |gradient over SuperWeight k|^2 per slot
        uses = torch.zeros(k, n, dtype=torch.float64)
        # SuperWeight -> slot -> the slot's gradient over it (several uses add up: dW/dv sums).
        by_sw: dict[int, dict[int, torch.Tensor]] = {}
        for slot, total in zip(self.group.slots, self.totals):
            for t in self.group.layout[slot]:
                rows, cols = self.group.superweights[t.superweight]
                r = total[t.row: t.row + rows, t.col: t.col + cols].reshape(-1)
                regions = by_sw.setdefault(t.superweight, {})
                i = index[slot]
                regions[i] = regions[i] + r if i in regions else r
        for sw, regions in by_sw.items():
            who = torch.tensor(list(regions))
            stacked = torch.stack(list(regions.values()))
            gram = stacked @ stacked.T
            dot[who[:, None], who[None, :]] += gram
            sq[sw, who] = gram.diagonal()
            uses[sw, who] = 1.0
        # Per pair, each slot's norm over the SuperWeights the two share.
        norm_i = (uses * sq).T @ uses
        denominator = (norm_i * norm_i.T).sqrt()
        cos = torch.where(denominator > 0, dot / denominator.clamp_min(1e-300),
                          torch.zeros_like(dot))
        return cos.fill_diagonal_(1.0).float()


class GradientCovariation:
    """Per slot, the norm of its weight's gradient at each measured step; two slots are compared
    by the Pearson correlation of the logarithms of their norms over the steps.

    Where Eq. 2 compares gradient *directions*, which for layers at different depths are
    unrelated even within one task, this compares their *sizes* from batch to batch: a batch
    that a task finds hard raises the gradients of all of that task's layers at once. On two
    MLPs trained on two unrelated tasks (benchmarks/bench_conflict.py) the correlations within a
    branch were 0.8-0.9 and across branches -0.2 to +0.3 on 3 seeds, where Eq. 2's cosines were
    near zero for every pair.
    """

    def __init__(self, slots: list[str]) -> None:
        self.slots = slots
        self.norms: list[torch.Tensor] = []
        self.grads: dict[int, float] = {}

    def record(self, i: int, grad: torch.Tensor) -> None:
        g = grad.detach()
        self.grads[i] = float(g.float().norm()) + self.grads.get(i, 0.0)

    def step(self, measure: bool = True) -> list[str]:
        """Keep the step's norms (when ``measure``); returns the slots whose gradient was not
        finite."""
        norms = torch.tensor([self.grads.get(i, 0.0) for i in range(len(self.slots))],
                             dtype=torch.float64)
        self.grads.clear()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(norms)  # (a sum of norms over ranks: the same on every rank)
        bad = [n for n, v in zip(self.slots, norms.tolist()) if not math.isfinite(v)]
        if measure and not bad:
            self.norms.append(norms)
        return bad

    def similarity(self) -> torch.Tensor:
        """The correlations, ``(slots, slots)``; 0 for a slot whose norm never changed (or with
        fewer than two measured steps), 1 on the diagonal."""
        if len(self.norms) < 2:
            return torch.eye(len(self.slots))
        series = torch.stack(self.norms).clamp_min(1e-30).log()
        centred = series - series.mean(0)
        unit = centred / centred.norm(dim=0).clamp_min(1e-12)
        return (unit.T @ unit).fill_diagonal_(1.0).float()
