"""Validation of a SharingPlan as a whole, before anything is built from it.

A plan is plain JSON, so it can be edited, and a checkpoint carries one: every field the rewrite
builds from is checked here, so that an inconsistent plan is a :class:`~ssnfx.core.errors.PlanError`
naming the field, never an IndexError from inside a generator or a model whose parameter count
disagrees with ``plan.budget``.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ssnfx.core.combiners import COMBINER_REGISTRY
from ssnfx.core.errors import PlanError
from ssnfx.core.jit import GENERATIONS
from ssnfx.core.methods import METHOD_REGISTRY
from ssnfx.core.slots import PLAN_VERSION, SELECTIONS, Slot

if TYPE_CHECKING:
    from ssnfx.core.plan import GroupPlan, SharingPlan

__all__ = ["validate_plan"]

_AGAIN = "make it again with ssnfx.make_plan (or save the model again with ssnfx.save)"


def validate_plan(plan: SharingPlan) -> None:
    """Raise :class:`PlanError` naming the first field of ``plan`` that is out of range or
    inconsistent with the rest.

    Checked: the version range; the method, combiner and generation mode; unique slot and group
    names; every shared slot in exactly one group and no private slot in any; store sizes,
    candidate counts and SuperWeight shapes positive; each group's layout naming exactly its
    slots, with tiles that lie inside their slot, name an existing SuperWeight and a coefficient
    row, and cover the slot's matrix once; and the budget at least the parameters the plan gives.

    Example:
        >>> import dataclasses, torch, ssnfx
        >>> gm = ssnfx.trace(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)))
        >>> plan = ssnfx.make_plan(gm, budget=0.5)
        >>> validate_plan(plan)
        >>> validate_plan(dataclasses.replace(plan, budget=10))
        Traceback (most recent call last):
        ...
        ssnfx.core.errors.PlanError: plan.budget is 10, but the plan gives the model 45 ...
    """

    if isinstance(plan.version, bool) or not isinstance(plan.version, int) \
            or not 1 <= plan.version <= PLAN_VERSION:
        _fail("version", f"is {plan.version!r}; this ssnfx reads versions 1 to {PLAN_VERSION}")
    for key, known in (("method", METHOD_REGISTRY), ("combiner", COMBINER_REGISTRY)):
        if getattr(plan, key) not in known:
            _fail(key, f"is {getattr(plan, key)!r}, not one of {tuple(known)} (a plan from "
                       f"another ssnfx, or a combiner not registered here)")
    generation = plan.options.generation
    if generation not in GENERATIONS:
        _fail("options.generation", f"is {generation!r}, not one of {GENERATIONS}")
    for key in ("budget", "original_params", "frozen_params"):
        value = getattr(plan, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            _fail(key, f"is {value!r}; it must be a parameter count (an int >= 0)")
    slots = _check_slots(plan.slots)
    _check_groups(plan.groups, slots)
    if plan.private_params < 0:
        _fail("original_params", f"is {plan.original_params:,}, fewer than the "
                                 f"{plan.original_params - plan.private_params:,} its shared "
                                 f"slots and frozen parameters hold")
    # At most, not exactly: coefficient rows tied after planning (or by refine) free some.
    if plan.shared_params > plan.budget:
        _fail("budget", f"is {plan.budget:,}, but the plan gives the model "
                        f"{plan.shared_params:,} parameters ({plan.private_params:,} private, "
                        f"the rest stores and coefficients): the budget or a store size was "
                        f"edited")


def _fail(field: str, problem: str) -> None:
    raise PlanError(f"plan.{field} {problem}; {_AGAIN}")


def _check_slots(slots: Iterable[Slot]) -> dict[str, Slot]:
    by_name: dict[str, Slot] = {}
    for i, s in enumerate(slots):
        where = f"slots[{i}]"
        if not isinstance(s.name, str) or not s.name:
            _fail(f"{where}.name", f"is {s.name!r}; it must be a parameter's qualified name")
        if s.name in by_name:
            _fail(f"{where}.name", f"{s.name!r} names two slots")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in s.shape):
            _fail(f"{where}.shape", f"is {list(s.shape)!r}; it must list sizes >= 0")
        if s.shared and s.numel == 0:
            _fail(f"{where}.shared", f"is true for {s.name!r}, which has no elements; such a "
                                     f"parameter stays private")
        by_name[s.name] = s
    return by_name


def _check_groups(groups: Iterable[GroupPlan], slots: dict[str, Slot]) -> None:
    owner: dict[str, str] = {}
    names: set[str] = set()
    for i, g in enumerate(groups):
        where = f"groups[{i}]"
        if not isinstance(g.name, str) or not g.name.isidentifier() or g.name in names:
            _fail(f"{where}.name", f"is {g.name!r}; group names must be distinct identifiers "
                                   f"(each names a submodule of the store)")
        names.add(g.name)
        if not g.slots:
            _fail(f"{where}.slots", "is empty; a group generates at least one slot")
        for name in g.slots:
            if name not in slots:
                _fail(f"{where}.slots", f"names {name!r}, which is not a slot of the plan")
            if not slots[name].shared:
                _fail(f"{where}.slots", f"names {name!r}, a private slot (shared: false); mark "
                                        f"it shared or take it out of the group")
            if name in owner:
                _fail(f"{where}.slots", f"names {name!r}, which group {owner[name]!r} "
                                        f"generates too")
            owner[name] = g.name
        for key in ("numel", "candidates"):
            value = getattr(g, key)
            if value < 1:
                _fail(f"{where}.{key}", f"is {value!r}; it must be at least 1")
        if g.selection not in SELECTIONS:
            _fail(f"{where}.selection", f"is {g.selection!r}; it must be one of {SELECTIONS}")
        if g.reserved < 0:
            _fail(f"{where}.reserved", f"is {g.reserved!r}; it must be >= 0")
        for k, (rows, cols) in enumerate(g.superweights):
            if rows < 1 or cols < 1:
                _fail(f"{where}.superweights[{k}]", f"is {[rows, cols]}; SuperWeights are at "
                                                    f"least 1 x 1")
        if set(g.layout) != set(g.slots):
            odd = sorted(set(g.layout) ^ set(g.slots))[:3]
            _fail(f"{where}.layout", f"does not name exactly the group's slots (differs at "
                                     f"{odd})")
        for name in g.slots:
            _check_tiles(f'{where}.layout["{name}"]', g, slots[name])
    unowned = [n for n, s in slots.items() if s.shared and n not in owner]
    if unowned:
        _fail("slots", f"marks {unowned[:3]} shared, but no group generates "
                       f"{'them' if len(unowned) > 1 else 'it'}; put each shared slot in a "
                       f"group, or mark it private (shared: false)")


def _check_tiles(where: str, g: GroupPlan, slot: Slot) -> None:
    """The tiles lie inside the slot's matrix view, name a SuperWeight and a coefficient row,
    and cover the matrix exactly once."""
    rows, cols = slot.matrix
    tiles = g.layout[slot.name]
    if not tiles:
        _fail(where, f"is empty; {slot.name!r} needs tiles covering its {rows} x {cols} matrix")
    for j, t in enumerate(tiles):
        if not 0 <= t.superweight < len(g.superweights):
            _fail(f"{where}[{j}]", f"names SuperWeight {t.superweight}; the group has "
                                   f"{len(g.superweights)}")
        if t.coefficients < 0:
            _fail(f"{where}[{j}]", f"names coefficient row {t.coefficients}; rows are >= 0")
        r, c = g.superweights[t.superweight]
        if t.row < 0 or t.col < 0 or t.row + r > rows or t.col + c > cols:
            _fail(f"{where}[{j}]", f"places a {r} x {c} SuperWeight at ({t.row}, {t.col}), "
                                   f"outside {slot.name!r}'s {rows} x {cols} matrix (a layout "
                                   f"of another slot, or an edited offset?)")
    # Exact cover, in time linear in the cells of the grid the tiles' edges cut: each cell is
    # covered by at most one tile, and the covered area is the whole matrix.
    sizes = [g.superweights[t.superweight] for t in tiles]
    row_cuts = sorted({0, rows, *(t.row for t in tiles), *(t.row + r for t, (r, _) in
                                                           zip(tiles, sizes))})
    col_cuts = sorted({0, cols, *(t.col for t in tiles), *(t.col + c for t, (_, c) in
                                                           zip(tiles, sizes))})
    row_at = {v: i for i, v in enumerate(row_cuts)}
    col_at = {v: i for i, v in enumerate(col_cuts)}
    covered: set[tuple[int, int]] = set()
    area = 0
    for j, (t, (r, c)) in enumerate(zip(tiles, sizes)):
        for a in range(row_at[t.row], row_at[t.row + r]):
            for b in range(col_at[t.col], col_at[t.col + c]):
                if (a, b) in covered:
                    _fail(f"{where}[{j}]", f"overlaps another tile of {slot.name!r}")
                covered.add((a, b))
        area += r * c
    if area != rows * cols:
        _fail(where, f"covers {area} of the {rows * cols} elements of {slot.name!r}'s matrix")
