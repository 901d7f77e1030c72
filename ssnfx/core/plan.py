"""The SharingPlan: the one thing the passes hand each other, and what checkpoints store.

A plan is plain data: the model's slots (every parameter read), the parameter groups, how many
parameters each group's store holds, and how each shared slot is assembled from SuperWeights and
coefficients. It round-trips through JSON, so it can be read, edited, diffed and replayed.

Layout vocabulary (SWN Sec. 2.1: Teterwak et al., "Learning to Compose SuperWeights for Neural
Parameter Allocation Search"): a slot's weight, viewed as a matrix of ``rows x cols``
(``shape[0]`` by the product of the rest), is a grid of *tiles*. Each tile is an instance of a
*SuperWeight* (a ``rows x cols`` block generated from the group's store by Eq. 1) combined with
one row of *coefficients*. SSN (Sec. 3.1 of Plummer et al., "Neural Parameter Allocation Search";
sections as numbered in its version titled "Shapeshifter Networks: Cross-layer Parameter Sharing
for Scalable and Effective Deep Learning") is the special case of one tile per slot whose
SuperWeight is the slot itself. Two tiles that name the same coefficient row are hard-shared
(identical); different rows over the same SuperWeight are soft-shared (same templates, own
coefficients).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ssnfx.core.combiners import COMBINER_REGISTRY, get_combiner
from ssnfx.core.errors import PlanError
from ssnfx.core.methods import METHOD_REGISTRY
from ssnfx.core.options import MOVED_TO_OPTIONS, PlanOptions, own_options
from ssnfx.core.plan_checks import validate_plan
from ssnfx.core.slots import PLAN_VERSION, SELECTIONS, Slot, Tile, matrix_shape

__all__ = ["PLAN_VERSION", "SELECTIONS", "Slot", "Tile", "GroupPlan", "SharingPlan", "matrix_shape"]

@dataclass
class GroupPlan:
    """A parameter group: slots that draw on one store (an SSN group / SWN SuperWeight cluster).

    Attributes:
        name: a short identifier, also the store's submodule name.
        slots: names of the slots in this group, in graph order.
        numel: number of parameters in the group's store (the Weight Templates).
        candidates: P, the most candidate blocks a SuperWeight combines (SSN Sec. 3.1).
        superweights: ``[rows, cols]`` of each SuperWeight.
        layout: for each slot, its tiles.
        reserved: coefficient rows allocated in all (at least the rows the layout uses). Hard
            sharing reserves a row per tile, so that the refine step can untie coefficients
            without adding parameters (SWN Sec. 2.2.2).
        selection: how a SuperWeight selects its candidates: ``"blocks"``, up to P whole
            blocks of its size, round robin across SuperWeights, the store's start upsampled
            where it holds no block (SSN Sec. 3.1); ``"resized"``, the store split into P equal,
            non-overlapping candidates that every SuperWeight bilinearly resizes, up or down, to
            its own shape (SSN Sec. 3.2: the search's "same set of candidates" for every layer).
    """

    name: str
    slots: list[str]
    numel: int
    candidates: int
    superweights: list[tuple[int, int]]
    layout: dict[str, list[Tile]]
    reserved: int = 0
    selection: str = "blocks"

    @property
    def num_coefficients(self) -> int:
        """Coefficient rows allocated: those the layout uses (tied tiles count once), or the
        reserved number if larger."""
        ids = {t.coefficients for tiles in self.layout.values() for t in tiles}
        return max(max(ids) + 1 if ids else 0, self.reserved)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "slots": list(self.slots),
            "numel": self.numel,
            "candidates": self.candidates,
            "superweights": [list(s) for s in self.superweights],
            "layout": {k: [[t.superweight, t.row, t.col, t.coefficients] for t in v]
                       for k, v in self.layout.items()},
            "reserved": self.reserved,
            "selection": self.selection,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "GroupPlan":
        return GroupPlan(
            name=d["name"],
            slots=list(d["slots"]),
            numel=int(d["numel"]),
            candidates=int(d["candidates"]),
            superweights=[(int(r), int(c)) for r, c in d["superweights"]],
            layout={k: [Tile(*map(int, t)) for t in v] for k, v in d["layout"].items()},
            reserved=int(d.get("reserved", 0)),
            selection=str(d.get("selection", "blocks")),
        )


@dataclass
class SharingPlan:
    """How a model's parameters are shared: written by search (or the data-free planner), read by
    rewrite, stored in checkpoints.

    Example:
        >>> import torch, ssnfx
        >>> gm = ssnfx.trace(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4)))
        >>> plan = ssnfx.make_plan(gm, budget=0.5)
        >>> ssnfx.SharingPlan.from_json(plan.to_json()) == plan
        True
    """

    method: str
    combiner: str
    budget: int
    original_params: int
    slots: list[Slot]
    groups: list[GroupPlan]
    options: PlanOptions = field(default_factory=PlanOptions)
    trace: dict[str, Any] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)
    version: int = PLAN_VERSION
    #: Parameters with ``requires_grad=False`` (slots or unread): kept as they are, frozen, and
    #: outside the budget (a float budget is a fraction of the trainable parameters).
    frozen_params: int = 0

    # ---- derived counts -------------------------------------------------------------------
    @property
    def private_params(self) -> int:
        """Trainable parameters that stay as they are: private slots and parameters the graph
        never reads, frozen ones apart (:attr:`frozen_params`)."""
        return self.original_params - self.frozen_params \
            - sum(s.numel for s in self.slots if s.shared)

    @property
    def trainable_params(self) -> int:
        """Trainable parameters of the original model: what a float budget is a fraction of."""
        return self.original_params - self.frozen_params

    def coefficient_params(self, group: GroupPlan) -> int:
        """Learned coefficient parameters of one group under the plan's combiner (SSN 3.1.2)."""
        # The combiner that creates the generator's coefficients counts them.
        combiner = get_combiner(self.combiner)
        return combiner.coefficient_params(group.num_coefficients, group.candidates,
                                           own_options(combiner, self.options.components))

    @property
    def shared_params(self) -> int:
        """Trainable parameters of the shared model: private + stores + coefficients."""
        return self.private_params + sum(g.numel + self.coefficient_params(g) for g in self.groups)

    def just_in_time(self, group: GroupPlan) -> list[str]:
        """The slots of ``group`` whose weights are made just in time (:mod:`ssnfx.core.jit`),
        by ``options.generation``: every one (``"jit"``), none (``"batched"``), or (``"auto"``)
        those of at least ``options.jit_numel`` elements, the others batched.

        Example:
            >>> import torch, ssnfx
            >>> net = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 4))
            >>> plan = ssnfx.make_plan(ssnfx.trace(net), 0.1, ssnfx.ShareConfig(generation="auto"))
            >>> plan.just_in_time(plan.groups[0])
            ['0.weight']
        """
        mode = self.options.generation
        if mode != "auto":
            return list(group.slots) if mode == "jit" else []
        numel = {s.name: s.numel for s in self.slots}
        return [n for n in group.slots if numel[n] >= self.options.jit_numel]

    def slot(self, name: str) -> Slot:
        for s in self.slots:
            if s.name == name:
                return s
        raise PlanError(f"the plan has no slot named {name!r}")

    # ---- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "method": self.method,
            "combiner": self.combiner,
            "budget": self.budget,
            "original_params": self.original_params,
            "frozen_params": self.frozen_params,
            "slots": [s.to_dict() for s in self.slots],
            "groups": [g.to_dict() for g in self.groups],
            "options": self.options.to_dict(),
            "trace": dict(self.trace),
            "measured": dict(self.measured),
        }

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "SharingPlan":
        if not isinstance(d, dict) or "version" not in d:
            raise PlanError("not a SharingPlan: expected a JSON object with a 'version' field")
        version = d["version"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise PlanError(f"the plan's version must be an int, got {version!r}: the plan is "
                            f"damaged or not a SharingPlan; make it again with ssnfx.make_plan")
        if version > PLAN_VERSION:
            raise PlanError(
                f"the plan has version {version}, newer than this ssnfx understands "
                f"({PLAN_VERSION}); upgrade ssnfx to read it")
        try:
            plan = SharingPlan(
                method=d["method"],
                combiner=d["combiner"],
                budget=int(d["budget"]),
                original_params=int(d["original_params"]),
                frozen_params=int(d.get("frozen_params", 0)),
                slots=[Slot.from_dict(s) for s in d["slots"]],
                groups=[GroupPlan.from_dict(g) for g in d["groups"]],
                # Plans before version 3 kept their options in an untyped "hyper" (with
                # entries since dropped: read leniently).
                options=_options(d, version),
                trace=dict(d.get("trace", {})),
                measured=dict(d.get("measured", {})),
                version=int(d["version"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise PlanError(f"malformed SharingPlan: {type(e).__name__}: {e}") from e
        # The whole plan, before anything is built from it (its method and combiner name the
        # generators; its layouts index the stores).
        validate_plan(plan)
        plan.version = PLAN_VERSION  # read into this version's form, and written so
        return plan

    @staticmethod
    def from_json(text: str) -> "SharingPlan":
        if not isinstance(text, (str, bytes, bytearray)):
            raise PlanError(f"SharingPlan.from_json expects the plan's JSON text, got "
                            f"{type(text).__name__}; use SharingPlan.from_dict for a dict")
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise PlanError(f"the plan is not valid JSON: {e}") from e
        return SharingPlan.from_dict(d)


def _options(d: dict[str, Any], version: int) -> PlanOptions:
    """The options of plan dict ``d`` of ``version``: plans before version 3 kept them in an
    untyped "hyper" (with entries since dropped: read leniently); settings that were fields
    before the version in :data:`~ssnfx.core.options.MOVED_TO_OPTIONS` (Emb's ``emb_dim``,
    SWN's ``hard_sharing`` and ``tile``) are read into ``components`` where the plan's method
    or combiner declares them, and dropped where it does not (SSN's ``tile`` of None)."""
    raw = dict(d.get("options", {}) if version >= 3 else d.get("hyper", {}))
    if version < 7:  # one group was the default grouping then
        raw.setdefault("strategy", "single")
    declared: dict[str, Any] = {}
    for registry, key in ((METHOD_REGISTRY, "method"), (COMBINER_REGISTRY, "combiner")):
        component = registry.get(d[key]) if isinstance(d.get(key), str) else None
        declared.update(component.options if component is not None else {})
    components = dict(raw.get("components", {}))
    for name, since in MOVED_TO_OPTIONS.items():
        if version < since and name in raw:
            value = raw.pop(name)
            if name in declared and value is not None:
                components.setdefault(name, value)
    if components:
        raw["components"] = components
    return PlanOptions.from_dict(raw, strict=version >= 3)
