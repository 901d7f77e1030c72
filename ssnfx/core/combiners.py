"""Combiners: how a SuperWeight mixes the P candidate blocks it selects from its group's store.

Each combiner is one object that owns everything about itself: the coefficient parameters it
adds to a group's generator (and so their count, which the plan's budget arithmetic reads from
the same object), their initialisation, the mixing weights it computes from them, whether they
are learned, and which of them are per-row (copied when refine unties a row). Adding one is a
subclass and a :func:`register_combiner` call.

The papers' combiners (SSN Sec. 3.1, SWN Eq. 1):

* ``rr``: round robin, one candidate per SuperWeight (the next SuperWeight the next block);
* ``avg``: the mean of the candidates;
* ``wavg``: the softmax of learned, orthogonally initialised logits (SSN Eq. 1);
* ``emb``: layer embeddings through a shared linear layer, then a softmax (SSN Eq. 2);
* ``linear``: learned linear coefficients (SWN Eq. 1).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssnfx.core.errors import PlanError
from ssnfx.core.registry import Registry

__all__ = ["Combiner", "COMBINER_REGISTRY", "register_combiner", "get_combiner", "orthogonal"]


def orthogonal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """Orthogonal initialisation (SSN Sec. 3.1.2: layer features start far apart)."""
    a = torch.randn(max(rows, cols), min(rows, cols), generator=gen)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    return (q if rows >= cols else q.T).contiguous()


class Combiner:
    """How a SuperWeight mixes its candidates. Subclass it and :func:`register_combiner` it.

    Attributes:
        name: what ``ShareConfig(combiner=...)`` names.
        learned: its coefficients are trained, so layers' rows can be compared
            (:func:`ssnfx.lsm.layer_similarity`).
        candidates: the P it always selects (RR: 1), or None for the configured P.
        row_parameters: names of its parameters with one row per coefficient row, which refine
            copies when it unties a row.
        options: its own settings and their defaults (JSON values), set by
            ``ShareConfig(options={...})`` and recorded in the plan; :meth:`coefficient_params`
            and :meth:`create` receive them resolved.
    """

    name: ClassVar[str] = ""
    learned: ClassVar[bool] = False
    candidates: ClassVar[int | None] = None
    row_parameters: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[Mapping[str, Any]] = {}

    def coefficient_params(self, rows: int, p: int, options: Mapping[str, Any]) -> int:
        """The learned parameters for ``rows`` coefficient rows over ``p`` candidates."""
        return 0

    def create(self, gen: nn.Module, rows: int, p: int, options: Mapping[str, Any],
               factory: dict[str, Any]) -> None:
        """Register this combiner's parameters on the group generator ``gen`` (uninitialised)."""

    def init(self, gen: nn.Module, rows: int, p: int, rng: torch.Generator) -> None:
        """Draw the parameters from ``rng`` (under ``torch.no_grad``)."""

    def mix(self, gen: nn.Module, coef: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """Mixing weights ``(instances, P)``: instance ``i`` uses coefficient row ``coef[i]``
        and combines the candidates where ``kept[i]`` is 1 (zero weight elsewhere)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


#: The registered combiners by name.
COMBINER_REGISTRY: Registry[Combiner] = Registry(
    "combiner", "ssnfx.core.combiners.register_combiner")


def register_combiner(combiner: Combiner) -> Combiner:
    """Make ``combiner`` known to ShareConfig, the planner, the generators and the reports.

    Example:
        >>> from ssnfx.core.combiners import COMBINER_REGISTRY
        >>> sorted(COMBINER_REGISTRY)
        ['avg', 'emb', 'linear', 'rr', 'wavg']
    """
    return COMBINER_REGISTRY.register(combiner.name, combiner)


def get_combiner(name: str) -> Combiner:
    """The registered combiner ``name``; ValueError naming the known ones otherwise."""
    return COMBINER_REGISTRY.lookup(name)


class RoundRobin(Combiner):
    """SSN Sec. 3.1.1: layer i takes candidate i mod |C| (the selection advances one block per
    SuperWeight); nothing is learned."""

    name = "rr"
    candidates = 1

    def mix(self, gen: nn.Module, coef: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        first = torch.arange(kept.shape[1], device=kept.device) == 0
        return first.to(gen.store.dtype).expand(kept.shape)


class Average(Combiner):
    """The mean of the candidates; nothing is learned."""

    name = "avg"

    def mix(self, gen: nn.Module, coef: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        return kept.to(gen.store.dtype) / kept.sum(1, keepdim=True)


def _softmax_over_kept(logits: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    # exp(-inf) = 0 past the candidates a row combines.
    return torch.softmax(logits.masked_fill(kept == 0, float("-inf")), dim=1)


class WeightedAverage(Combiner):
    """SSN Eq. 1: the softmax of learned logits ``phi``, one row per coefficient row,
    orthogonally initialised."""

    name = "wavg"
    learned = True
    row_parameters = ("phi",)

    def coefficient_params(self, rows: int, p: int, options: Mapping[str, Any]) -> int:
        return rows * p

    def create(self, gen: nn.Module, rows: int, p: int, options: Mapping[str, Any],
               factory: dict[str, Any]) -> None:
        gen.phi = nn.Parameter(torch.empty(rows, p, **factory))

    def init(self, gen: nn.Module, rows: int, p: int, rng: torch.Generator) -> None:
        gen.phi.copy_(orthogonal(rows, p, rng))

    def mix(self, gen: nn.Module, coef: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        return _softmax_over_kept(gen.phi.index_select(0, coef), kept)


class Embedding(Combiner):
    """SSN Eq. 2: layer embeddings ``phi`` (orthogonal) through a shared linear layer
    ``proj_weight``, ``proj_bias`` to logits over the candidates, then a softmax."""

    name = "emb"
    learned = True
    row_parameters = ("phi",)
    #: The size of the layer embeddings (SSN Sec. 3.1.2 uses 24).
    options = {"emb_dim": 24}

    def coefficient_params(self, rows: int, p: int, options: Mapping[str, Any]) -> int:
        emb_dim = options["emb_dim"]
        if emb_dim < 1:
            raise PlanError(f"the emb combiner's emb_dim must be a positive int, got {emb_dim}")
        return rows * emb_dim + emb_dim * p + p

    def create(self, gen: nn.Module, rows: int, p: int, options: Mapping[str, Any],
               factory: dict[str, Any]) -> None:
        emb_dim = options["emb_dim"]
        gen.phi = nn.Parameter(torch.empty(rows, emb_dim, **factory))
        gen.proj_weight = nn.Parameter(torch.empty(p, emb_dim, **factory))
        gen.proj_bias = nn.Parameter(torch.empty(p, **factory))

    def init(self, gen: nn.Module, rows: int, p: int, rng: torch.Generator) -> None:
        emb_dim = gen.phi.shape[1]
        gen.phi.copy_(orthogonal(rows, emb_dim, rng))
        bound = 1 / math.sqrt(emb_dim)
        gen.proj_weight.copy_(torch.empty(p, emb_dim).uniform_(-bound, bound, generator=rng))
        gen.proj_bias.zero_()

    def mix(self, gen: nn.Module, coef: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        logits = F.linear(gen.phi.index_select(0, coef), gen.proj_weight, gen.proj_bias)
        return _softmax_over_kept(logits, kept)


class Linear(Combiner):
    """SWN Eq. 1: learned linear coefficients ``alpha``, orthogonal rows scaled to unit norm
    over the candidates each row combines, so that a sum of independent candidates keeps the
    store's variance."""

    name = "linear"
    learned = True
    row_parameters = ("alpha",)

    def coefficient_params(self, rows: int, p: int, options: Mapping[str, Any]) -> int:
        return rows * p

    def create(self, gen: nn.Module, rows: int, p: int, options: Mapping[str, Any],
               factory: dict[str, Any]) -> None:
        gen.alpha = nn.Parameter(torch.empty(rows, p, **factory))

    def init(self, gen: nn.Module, rows: int, p: int, rng: torch.Generator) -> None:
        gen.alpha.copy_(orthogonal(rows, p, rng))
        for coef, used in gen.coefficient_rows():
            a = gen.alpha[coef, :used]
            gen.alpha[coef, :used] = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def mix(self, gen: nn.Module, coef: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        return gen.alpha.index_select(0, coef) * kept


for _combiner in (RoundRobin(), Average(), WeightedAverage(), Embedding(), Linear()):
    register_combiner(_combiner)
