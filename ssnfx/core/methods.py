"""Methods: how a parameter group's slots are cut into SuperWeights, and what a search learns.

Each method is one object that owns everything about itself: the layout of a group (which
SuperWeights it holds and which tiles of which slot each one fills, :mod:`ssnfx.core.selector`), the
combiner it mixes candidates with unless the config names one, and which of the search's results
it shares by (parameter groups, or SuperWeight clusters). The planner and the search ask the
method; adding one is a subclass and a :func:`register_method` call.

* ``ssn``: Shapeshifter Networks: each slot is one SuperWeight with its own coefficients, its
  weight mixed from candidate blocks of its group's flat store (SSN Sec. 3.1); the search's
  parameter groups (SSN Sec. 3.3); the weighted average of Eq. 1 by default.
* ``swn``: SuperWeight Networks: SuperWeights cut from the group's sorted layer shapes and
  concatenated into each slot (SWN Sec. 2.1.2); the search's SuperWeight clusters (Sec. 2.2.1);
  the linear combination of Eq. 1 by default.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from ssnfx.core.combiners import get_combiner
from ssnfx.core.errors import PlanError
from ssnfx.core.options import own_options
from ssnfx.core.registry import Registry
from ssnfx.core.selector import ssn_layout, swn_layout
from ssnfx.core.slots import Slot, Tile

if TYPE_CHECKING:
    from ssnfx.core.config import ShareConfig
    from ssnfx.core.plan import SharingPlan

__all__ = ["Method", "METHOD_REGISTRY", "METHOD_PREFERENCE", "DEFAULT_TILES_PER_SLOT",
           "register_method", "get_method", "auto_tile", "TEMPLATES", "COEFFICIENT_SHARE"]

Layout = tuple[list[tuple[int, int]], dict[str, list[Tile]]]


class Method:
    """A weight-generation method. Subclass it and :func:`register_method` it.

    Attributes:
        name: what ``ShareConfig(method=...)`` names.
        default_combiner: the combiner used when ``ShareConfig.combiner`` is None.
        shares_by: which grouping of a search the plan takes: ``"groups"`` (parameter groups
            from the layer embeddings) or ``"clusters"`` (SuperWeight clusters from the
            gradient similarity).
        statistic: what its search trains and measures by default
            (:data:`ssnfx.passes.searching.STATISTICS`): ``"coefficients"`` (SSN Sec. 3.2's
            provisional model) or ``"superweights"`` (SWN Eq. 2 on a hard-shared model).
        options: its own settings and their defaults (JSON values), set by
            ``ShareConfig(options={...})`` and recorded in the plan; :meth:`layout` reads them
            with :meth:`own`.
    """

    name: ClassVar[str] = ""
    default_combiner: ClassVar[str] = "linear"
    shares_by: ClassVar[str] = "groups"
    statistic: ClassVar[str] = "coefficients"
    options: ClassVar[Mapping[str, Any]] = {}

    def own(self, config: ShareConfig) -> dict[str, Any]:
        """This method's own settings in ``config`` (:func:`ssnfx.core.options.own_options`)."""
        return own_options(self, config.options)

    def layout(self, slots: Sequence[Slot], config: ShareConfig) -> Layout:
        """The group's SuperWeights ``[(rows, cols)]`` and each slot's tiles, for ``slots``
        sorted by position."""
        raise NotImplementedError

    def resolve(self, config: ShareConfig, slots: Sequence[Slot], available: int
                ) -> ShareConfig:
        """``config`` with this method's budget-dependent settings decided, for the shared
        ``slots`` of a plan whose stores and coefficients may take ``available`` parameters.
        The planner calls it once per plan, before any layout; the default changes nothing."""
        return config

    def reserves_rows(self, config: ShareConfig) -> bool:
        """Whether a plan of this method under ``config`` reserves a coefficient row per tile
        for the refine step to untie (SWN's hard sharing, Sec. 2.2.2); the plan then records
        ``config.refine_at``. Here: never."""
        return False

    def suits(self, plan: SharingPlan) -> bool:
        """Whether this method is a sound default for the model of ``plan``, a plan made with
        it: ``ShareConfig(method=None)`` takes the first method of :data:`METHOD_PREFERENCE`
        whose least budget the budget meets and that suits the model. Here: always."""
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _check_method(name: str, method: Method) -> None:
    if method.shares_by not in ("groups", "clusters"):
        raise ValueError(f"{type(method).__name__}.shares_by must be 'groups' or 'clusters', "
                         f"got {method.shares_by!r}")


#: The registered methods by name.
METHOD_REGISTRY: Registry[Method] = Registry(
    "method", "ssnfx.core.methods.register_method", _check_method)


#: What ``ShareConfig(method=None)``, the default, takes: the first of these whose least budget
#: the budget meets and that suits the model (:meth:`Method.suits`). SWN first, by measurement
#: at equal parameters (``benchmarks/RESULTS.md``): Fashion-MNIST at 5% and 10% 86.6% and
#: 88.2% against SSN WAvg's 86.0% and 87.4% (2 seeds); a byte-level transformer LM at 5% and
#: 10% 2.58 and 2.36 bits per byte against SSN's 3.32 and 2.54, where the best reduced model
#: gave 2.72 and 2.53 (3 seeds). SSN's least budget is the lower one (one store parameter per
#: group and a coefficient row per layer), so it takes the budgets SWN cannot.
METHOD_PREFERENCE: tuple[str, ...] = ("swn", "ssn")
#: SWN suits a model as the default where its layout cuts a shared slot into at most this many
#: tiles on average (a regular grid of equal tiles counting as one): each irregular tile is
#: assembled apart, and on mobile networks, whose many layer sizes cut every layer at every
#: other's (75-200 tiles a layer), a step at 10% took 1.06-1.21x the unshared one against SSN's
#: 1.00-1.04x (benchmarks/results/speed.md, "Short steps with SWN"); resnet18 (17 a layer) took
#: 1.20x against 1.10x at 64 px; ResNetFM(16) (13 a layer), where SWN's accuracy was measured,
#: and the transformer LM (regular grids) stay SWN.
DEFAULT_TILES_PER_SLOT = 16


def register_method(method: Method) -> Method:
    """Make ``method`` known to ShareConfig, the planner, the search and the plan loader.

    Example:
        >>> from ssnfx.core.methods import METHOD_REGISTRY
        >>> sorted(METHOD_REGISTRY)
        ['ssn', 'swn']
    """
    return METHOD_REGISTRY.register(method.name, method)


def get_method(name: str) -> Method:
    """The registered method ``name``; ValueError naming the known ones otherwise.

    Example:
        >>> get_method("swn").default_combiner
        'linear'
    """
    return METHOD_REGISTRY.lookup(name)


class Shapeshifter(Method):
    """SSN: one SuperWeight per slot, mixed from its group's store (SSN Sec. 3.1). Its
    candidates are mixed by learned linear coefficients, as in SSN's reference code (the paper's
    WAvg, a softmax, is ``ShareConfig(combiner="wavg")``; linear measured better)."""

    name = "ssn"
    default_combiner = "linear"
    shares_by = "groups"

    def layout(self, slots: Sequence[Slot], config: ShareConfig) -> Layout:
        return ssn_layout(slots)


class SuperWeights(Method):
    """SWN: SuperWeights from sorted layer shapes, concatenated into each slot (SWN Sec. 2.1).

    Its own settings (``ShareConfig(options={...})``, recorded in the plan):

    * ``hard_sharing`` (False): tiles of one SuperWeight share one coefficient row (hard
      sharing, SWN Sec. 2.2.2, each row then reserved for the refine step to untie) instead of
      one row each (soft sharing).
    * ``tile`` (None): the longest side of a SuperWeight (the canvas is also cut every ``tile``
      rows and columns); ``0``: the layers' own cuts only (SWN Sec. 2.1.2); ``None``: chosen
      from the budget by :func:`auto_tile`, the plan recording the tile used.

    Example:
        >>> import torch, ssnfx
        >>> net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64))
        >>> cfg = ssnfx.ShareConfig(method="swn", options={"hard_sharing": True, "tile": 32})
        >>> ssnfx.make_plan(ssnfx.trace(net), 0.5, cfg).options.components
        {'hard_sharing': True, 'tile': 32}
    """

    name = "swn"
    default_combiner = "linear"
    shares_by = "clusters"
    statistic = "superweights"
    options = {"hard_sharing": False, "tile": None}

    def own(self, config: ShareConfig) -> dict[str, Any]:
        own = super().own(config)
        tile = own["tile"]
        if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 0):
            raise PlanError(f"SWN's option 'tile' must be an int >= 0 (0: no cuts beyond the "
                            f"layers' own) or None (chosen from the budget), got {tile!r}")
        return own

    def layout(self, slots: Sequence[Slot], config: ShareConfig) -> Layout:
        own = self.own(config)
        return swn_layout(slots, own["hard_sharing"], own["tile"] or None)

    def reserves_rows(self, config: ShareConfig) -> bool:
        return bool(self.own(config)["hard_sharing"])

    def resolve(self, config: ShareConfig, slots: Sequence[Slot], available: int
                ) -> ShareConfig:
        if self.own(config)["tile"] is not None:
            return config
        return replace(config, options={**config.options,
                                        "tile": auto_tile(slots, available, config)})

    def suits(self, plan: SharingPlan) -> bool:
        """Where its layout is light: at most :data:`DEFAULT_TILES_PER_SLOT` tiles per shared
        slot on average, a slot of equal tiles (a regular grid) counting as one."""
        cost = slots = 0
        for g in plan.groups:
            for name in g.slots:
                shapes = {g.superweights[t.superweight] for t in g.layout[name]}
                cost += 1 if len(shapes) == 1 else len(g.layout[name])
                slots += 1
        return cost <= DEFAULT_TILES_PER_SLOT * max(1, slots)


#: The Weight Templates a store should hold at least, for :func:`auto_tile`...
TEMPLATES = 32
#: ... while the coefficients take at most this share of the store's and coefficients' budget.
COEFFICIENT_SHARE = 0.1


def auto_tile(slots: Sequence[Slot], available: int, config: ShareConfig) -> int:
    """SWN's default ``tile``: the largest power of two ``t`` whose ``t x t`` SuperWeights the
    store holds :data:`TEMPLATES` times (``available``, the parameters the stores and the
    coefficients may take, standing in for the store), if their coefficients take at most
    :data:`COEFFICIENT_SHARE` of ``available``, ``t`` is below the largest layer side and
    every layer's rows and columns are multiples of ``t``; else 0, the layers' own cuts (SWN
    Sec. 2.1.2).

    Measured (``benchmarks/RESULTS.md``, "SWN's tile"): on a byte-level transformer LM
    (``ByteLM(128, 4)``) tiles of 32 took the validation loss from 3.16 to 2.58 bits per byte at
    5% and from 2.45 to 2.35 at 10% (64: 2.72 and 2.37; 16: 2.63 at 5%); on a ResNet of 77,754
    parameters on Fashion-MNIST the layers' own cuts were best (86.6% at 5%, tiles of 32 and 16:
    86.2% and 85.8%, 2 seeds), where tiles' coefficients would take 12-45% of the budget.

    Example:
        >>> from ssnfx.core.plan import Slot
        >>> from ssnfx.core.config import ShareConfig
        >>> slots = [Slot(f"l{i}", (128, 128), "weight", "Linear", i) for i in range(8)]
        >>> [auto_tile(slots, n, ShareConfig(method="swn")) for n in (40_000, 2_000, 10**6)]
        [32, 0, 0]
    """
    side = max(max(s.matrix) for s in slots)
    t = 1 << max(0, int(math.log2(max(1.0, math.sqrt(max(0, available) / TEMPLATES)))))
    # Only where every layer is a whole grid of t x t tiles: generated by one gather per shape
    # (on mobilenet_v3_large, whose odd sizes would cut into hundreds of tile shapes, a step
    # took 3.6x the unshared one with t = 64 where the layers' own cuts took 1.9x).
    divides = math.gcd(*(d for s in slots for d in s.matrix))
    t = min(t, divides & -divides)  # the largest power of two that divides every side
    if t >= side:
        return 0
    combiner = get_combiner(config.resolved_combiner)
    settings = own_options(combiner, config.options)

    def fits(rows: int) -> bool:
        coefficients = combiner.coefficient_params(rows, config.candidates, settings)
        return coefficients <= COEFFICIENT_SHARE * available

    # Each slot is at least (rows / t) x (cols / t) tiles, each a coefficient row: a tile whose
    # least rows do not fit is refused before its layout (on resnet18, whose 7 x 7 x 3 stem
    # leaves t = 1, laying out 11M tiles took 30 s).
    if not fits(sum((s.matrix[0] // t) * (s.matrix[1] // t) for s in slots)):
        return 0
    _, layout = swn_layout(slots, SuperWeights().own(config)["hard_sharing"], t)
    # Soft sharing: a row per tile; hard: as many reserved for the refine step.
    return t if fits(sum(len(tiles) for tiles in layout.values())) else 0


for _method in (Shapeshifter(), SuperWeights()):
    register_method(_method)
