"""Methods: how a parameter group's slots are cut into SuperWeights, and what a search learns.

Each method is one object that owns everything about itself: the layout of a group (which
SuperWeights it holds and which tiles of which slot each one fills, :mod:`ssnfx.selector`), the
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

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from .plan import Slot, Tile
from .selector import ssn_layout, swn_layout

if TYPE_CHECKING:
    from .config import ShareConfig

__all__ = ["Method", "METHOD_REGISTRY", "register_method", "get_method"]

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
            (:data:`ssnfx.passes.search.STATISTICS`): ``"coefficients"`` (SSN Sec. 3.2's
            provisional model) or ``"superweights"`` (SWN Eq. 2 on a hard-shared model).
    """

    name: ClassVar[str] = ""
    default_combiner: ClassVar[str] = "linear"
    shares_by: ClassVar[str] = "groups"
    statistic: ClassVar[str] = "coefficients"

    def layout(self, slots: Sequence[Slot], config: ShareConfig) -> Layout:
        """The group's SuperWeights ``[(rows, cols)]`` and each slot's tiles, for ``slots``
        sorted by position."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


#: The registered methods by name.
METHOD_REGISTRY: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Make ``method`` known to ShareConfig, the planner, the search and the plan loader.

    Example:
        >>> from ssnfx.methods import METHOD_REGISTRY
        >>> sorted(METHOD_REGISTRY)
        ['ssn', 'swn']
    """
    if not method.name:
        raise ValueError(f"{type(method).__name__} has no name")
    if method.shares_by not in ("groups", "clusters"):
        raise ValueError(f"{type(method).__name__}.shares_by must be 'groups' or 'clusters', "
                         f"got {method.shares_by!r}")
    METHOD_REGISTRY[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method ``name``; ValueError naming the known ones otherwise.

    Example:
        >>> get_method("swn").default_combiner
        'linear'
    """
    try:
        return METHOD_REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHOD_REGISTRY)} (add one "
                         f"with ssnfx.methods.register_method)") from None


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
    """SWN: SuperWeights from sorted layer shapes, concatenated into each slot (SWN Sec. 2.1);
    soft or hard sharing by ``ShareConfig.hard_sharing``."""

    name = "swn"
    default_combiner = "linear"
    shares_by = "clusters"
    statistic = "superweights"

    def layout(self, slots: Sequence[Slot], config: ShareConfig) -> Layout:
        return swn_layout(slots, config.hard_sharing, config.tile)


for _method in (Shapeshifter(), SuperWeights()):
    register_method(_method)
