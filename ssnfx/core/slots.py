"""The plan's records: the slots (the weights a model reads), the tiles that assemble them, and
the plan format's version. Below :mod:`ssnfx.core.plan`, so that what validates and lays out
plans (the methods, the selector, the checks) can read them without importing the plan.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PLAN_VERSION", "SELECTIONS", "Slot", "Tile", "matrix_shape"]

#: Bumped whenever a plan's meaning changes; a plan with a larger version is refused.
#: 2: a group's ``selection`` (version 1 plans select blocks). 3: typed ``options`` (a
#: :class:`~ssnfx.core.options.PlanOptions`) in place of the ``hyper`` dict. 4: a method's and
#: combiner's own settings in ``options.components`` (Emb's ``emb_dim`` was a field). 5: SWN's
#: ``hard_sharing`` and ``tile`` in ``options.components`` too (they were fields). 6: the
#: ``"auto"`` generation mode and its ``options.jit_numel``. 7: the ``"auto"`` grouping
#: strategy, the default (older plans that name none were made with ``"single"``).
PLAN_VERSION = 7
#: How a group's SuperWeights select their candidates from its store (see :class:`GroupPlan`).
SELECTIONS = ("blocks", "resized")


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The ``(rows, cols)`` matrix view of a weight: ``shape[0]`` by the product of the rest.

    Example:
        >>> matrix_shape((64, 3, 7, 7))
        (64, 147)
    """
    if len(shape) == 0:
        return (1, 1)
    return (shape[0], math.prod(shape[1:]))


@dataclass(frozen=True)
class Slot:
    """One parameter read by the model, as found by the trace pass.

    Attributes:
        name: qualified parameter name (the first name, if the parameter is tied).
        shape: the parameter's shape.
        role: ``"weight"``, ``"bias"`` or the attribute's own name.
        kind: class name of the layer that owns it (``"Conv2d"``), or ``"Parameter"`` for a
            parameter the model uses directly (``F.linear(x, self.w)``).
        position: index of the first graph node that reads it.
        leaf: True when it is read inside a leaf module (RNN, MultiheadAttention, ...), which then
            receives generated weights through ``torch.func.functional_call``.
        aliases: the other names of the same Parameter object (tied weights).
        shared: True when the plan generates it from a store; False keeps it private.
    """

    name: str
    shape: tuple[int, ...]
    role: str
    kind: str
    position: int
    leaf: bool = False
    aliases: tuple[str, ...] = ()
    shared: bool = True

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def matrix(self) -> tuple[int, int]:
        return matrix_shape(self.shape)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["aliases"] = list(self.aliases)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Slot":
        return Slot(**{**d, "shape": tuple(d["shape"]), "aliases": tuple(d.get("aliases", ()))})


@dataclass(frozen=True)
class Tile:
    """One SuperWeight instance placed in a slot's matrix view at ``(row, col)``."""

    superweight: int
    row: int
    col: int
    coefficients: int
