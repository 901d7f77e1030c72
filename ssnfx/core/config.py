"""ShareConfig: every knob of the sharing workflow in one versioned dataclass, JSON round-trip."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ssnfx.core.combiners import COMBINER_REGISTRY
from ssnfx.core.errors import PlanError
from ssnfx.core.jit import GENERATIONS
from ssnfx.core.methods import METHOD_PREFERENCE, METHOD_REGISTRY, get_method
from ssnfx.core.options import MOVED_TO_OPTIONS, PlanOptions
from ssnfx.core.plan import SELECTIONS

__all__ = ["ShareConfig", "METHODS", "COMBINERS", "SPLITS", "DEFAULT_GROUPS"]

#: The names of the registered methods (a live view of :data:`ssnfx.core.methods.METHOD_REGISTRY`:
#: Shapeshifter Networks, SuperWeight Networks, and any method registered since).
METHODS = METHOD_REGISTRY.keys()
#: Groups of the ``depth`` and ``random`` strategies when ``ShareConfig.groups`` is None (SSN
#: Sec. 3.2 found three learned groups best for classification).
DEFAULT_GROUPS = 3
#: How the planner splits a budget between groups (see :func:`ssnfx.passes.planner._split`):
#: each group's largest SuperWeight first, then in proportion to the weights its slots
#: represent (SWN's reference code), or all in proportion (SSN Sec. 3.2).
SPLITS = ("largest-first", "proportional")
#: The names of the registered combiners (a live view of
#: :data:`ssnfx.core.combiners.COMBINER_REGISTRY`: round robin, average, weighted average, layer
#: embeddings, SWN's linear combination, and any combiner registered since).
COMBINERS = COMBINER_REGISTRY.keys()


def _json_scalars(d: Any) -> bool:
    """Whether ``d`` maps strings to None, bools, numbers or strings (what a plan stores)."""
    return isinstance(d, dict) and all(
        isinstance(k, str) and (v is None or isinstance(v, (bool, int, float, str)))
        for k, v in d.items())


@dataclass
class ShareConfig:
    """How ssnfx shares a model's parameters.

    Args:
        method: ``"ssn"`` (a flat store per group, candidate blocks per slot, SSN Sec. 3.1),
            ``"swn"`` (SuperWeights concatenated into each slot, SWN Sec. 2.1), or ``None``: SWN
            where the budget meets its least budget and its layout is light (at most
            :data:`~ssnfx.core.methods.DEFAULT_TILES_PER_SLOT` tiles a layer: networks of few
            layer shapes), else SSN (:data:`ssnfx.core.methods.METHOD_PREFERENCE`, by
            measurement). The plan records the method used.
        combiner: ``"rr"``, ``"avg"``, ``"wavg"``, ``"emb"`` or ``"linear"``; ``None`` picks the
            method's own (the linear combination of SWN's Eq. 1 for both: it measured better
            than SSN's WAvg, see the README).
        strategy: data-free grouping: ``"auto"`` (default: one group, split into depth bins
            where the budget would make each SuperWeight mix more than ``candidates``
            templates), ``"single"`` (one group at any budget), ``"depth"``, ``"shape"``,
            ``"random"`` (see :mod:`ssnfx.core.grouping` for why and what was measured).
        groups: the number of parameter groups: of the ``depth`` and ``random`` strategies
            (``None``: 3), and of the search's learned groups (``None``: chosen by silhouette
            score, see :class:`ssnfx.SearchConfig`).
        candidates: P, the most candidate blocks selected per SuperWeight (SSN Sec. 3.2 uses 4);
            for budgets above 1.0 the planner raises it until the candidates could cover the
            store. RR selects one block per SuperWeight whatever P is.
        refine_at: with SWN's hard sharing, the fraction of a training run after which
            :func:`ssnfx.training.train` (or a loop that calls
            :func:`ssnfx.training.refine_if_due`) unties the coefficients whose uses pull apart
            (SWN Sec. 2.2.2: E = 10 of 200 epochs, 0.05); ``None``: never (call
            :func:`ssnfx.refine` yourself). Recorded in the plan.
        selection: how SuperWeights select candidates from their group's store: ``"blocks"``
            (whole blocks, round robin, SSN Sec. 3.1) or ``"resized"`` (P equal candidates that
            every SuperWeight resizes to its shape, SSN Sec. 3.2; what the search trains).
        generation: ``"auto"`` (the default: weights of at least
            :data:`~ssnfx.core.jit.JIT_NUMEL` elements just in time, the others batched),
            ``"batched"`` (every weight of a group at the start of the forward, in a few batched
            ops) or ``"jit"`` (each weight right before the layer that reads it, made again in
            backward instead of kept: the step's peak memory no longer holds every generated
            weight and gradient; see :mod:`ssnfx.core.jit`). Measured: "auto" steps as batched
            on mobile networks, whose weights are small, and peaks as "jit" on transformers,
            whose weights are large (the README). Recorded in the plan.
        split: how several groups share the budget: ``"largest-first"`` (each group's largest
            SuperWeight first, then in proportion to the weights its slots represent; SWN's
            reference code) or ``"proportional"`` (all in proportion; SSN Sec. 3.2). Recorded
            in the plan's ``options``.
        share_biases: also generate 1-d parameters (biases) from the store.
        share_norms: also generate the parameters of normalisation layers.
        private: ``fnmatch`` patterns of parameter names that always stay private.
        leaf_modules: qualified module names traced as leaves (they get their weights through
            ``torch.func.functional_call``); ``""`` is the model itself.
        auto_leaves: make every module that torch.fx cannot trace a leaf, up to the model
            itself (see :func:`ssnfx.trace`); ``False`` raises the TraceError instead.
        concrete_args: forward arguments fixed at trace time (``None``, bools, numbers,
            strings), e.g. ``{"labels": None}``; recorded in the plan so that
            :func:`ssnfx.load` traces the same way.
        seed: seed for the store's initialisation, for random grouping, and for the search's
            provisional model and K-means.
        options: settings that belong to the method or the combiner, by name, each declared by
            its component with its default: SWN's ``hard_sharing`` and ``tile``
            (:class:`~ssnfx.core.methods.SuperWeights`), the Emb combiner's ``emb_dim`` (the
            size of its layer embeddings, SSN Sec. 3.1.2, 24), a registered component's own. A
            name neither declares is an error when the plan is made (with ``method=None``,
            only methods that declare it are considered). Recorded in the plan.

    Example:
        >>> cfg = ShareConfig(method="swn", private=("fc.*",))
        >>> ShareConfig.from_json(cfg.to_json()) == cfg
        True
    """

    # (The settings a plan records default as PlanOptions does: each default written once.)
    method: str | None = None
    combiner: str | None = None
    strategy: str = PlanOptions.strategy
    groups: int | None = None
    candidates: int = PlanOptions.candidates
    refine_at: float | None = 0.05
    selection: str = PlanOptions.selection
    split: str = PlanOptions.split
    generation: str = PlanOptions.generation
    share_biases: bool = False
    share_norms: bool = False
    private: tuple[str, ...] = ()
    leaf_modules: tuple[str, ...] = ()
    auto_leaves: bool = True
    concrete_args: dict[str, Any] = field(default_factory=dict)
    seed: int = PlanOptions.seed
    options: dict[str, Any] = field(default_factory=dict)
    version: int = field(default=1)

    def __post_init__(self) -> None:
        for name in ("private", "leaf_modules"):
            value = getattr(self, name)
            if isinstance(value, str):  # tuple("fc.*") would be four one-letter patterns
                raise PlanError(f"ShareConfig.{name} must be a tuple of names, got the string "
                                f"{value!r}; write {name}=({value!r},)")
        self.private = tuple(self.private)
        self.leaf_modules = tuple(self.leaf_modules)
        if not _json_scalars(self.concrete_args):
            raise PlanError(f"ShareConfig.concrete_args must map argument names to None, bools, "
                            f"numbers or strings (they are stored in the plan as JSON), got "
                            f"{self.concrete_args!r}")
        self.concrete_args = dict(self.concrete_args)
        if not _json_scalars(self.options):
            raise PlanError(f"ShareConfig.options must map setting names to None, bools, "
                            f"numbers or strings (they are stored in the plan as JSON), got "
                            f"{self.options!r}")
        self.options = dict(self.options)
        if self.method is not None and self.method not in METHODS:
            raise PlanError(f"ShareConfig.method must be one of {tuple(METHODS)}, got "
                            f"{self.method!r}")
        if self.generation not in GENERATIONS:
            raise PlanError(f"ShareConfig.generation must be one of {GENERATIONS}, got "
                            f"{self.generation!r}")
        if self.selection not in SELECTIONS:
            raise PlanError(f"ShareConfig.selection must be one of {SELECTIONS}, got "
                            f"{self.selection!r}")
        if self.split not in SPLITS:
            raise PlanError(f"ShareConfig.split must be one of {SPLITS}, got {self.split!r}")
        if self.combiner is not None and self.combiner not in COMBINERS:
            raise PlanError(f"ShareConfig.combiner must be one of {tuple(COMBINERS)} or None, "
                            f"got {self.combiner!r}")
        if self.refine_at is not None and (
                isinstance(self.refine_at, bool) or not isinstance(self.refine_at, (int, float))
                or not 0 <= self.refine_at < 1):
            raise PlanError(f"ShareConfig.refine_at must be a fraction in [0, 1) of the "
                            f"training run, or None, got {self.refine_at!r}")
        for name in ("groups", "candidates"):
            value = getattr(self, name)
            if name == "groups" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                what = "a positive int or None" if name == "groups" else "a positive int"
                raise PlanError(f"ShareConfig.{name} must be {what}, got {value!r}")

    @property
    def resolved_groups(self) -> int:
        """The number of groups of the data-free strategies (``groups``, else 3)."""
        return self.groups if self.groups is not None else DEFAULT_GROUPS

    @property
    def resolved_combiner(self) -> str:
        """The combiner named, else the method's own."""
        return self.combiner or get_method(self.method or METHOD_PREFERENCE[0]).default_combiner

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["private"] = list(self.private)
        d["leaf_modules"] = list(self.leaf_modules)
        d["concrete_args"] = dict(self.concrete_args)
        d["options"] = dict(self.options)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "ShareConfig":
        moved = {k: d[k] for k in MOVED_TO_OPTIONS if k in d}
        if moved:  # fields until their component declared them as its own settings
            d = {k: v for k, v in d.items() if k not in moved}
            d["options"] = {**moved, **d.get("options", {})}
        known = {f.name for f in fields(ShareConfig)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PlanError(f"unknown ShareConfig field(s) {unknown}; known: {sorted(known)}")
        return ShareConfig(**d)

    @staticmethod
    def from_json(text: str) -> "ShareConfig":
        return ShareConfig.from_dict(json.loads(text))
