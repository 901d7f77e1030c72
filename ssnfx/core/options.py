"""PlanOptions: the settings a plan was made with and its generators read, typed and recorded.

:class:`~ssnfx.core.config.ShareConfig` is what a user asks for; the planner resolves it (the
method's tile, the candidates a combiner reads, whether the plan came from a search) into one
frozen :class:`PlanOptions` that travels in the plan. Each default is written here once:
ShareConfig's fields of the same names default to these, and a plan written before options
existed (its ``hyper`` dict, plan versions 1 and 2) reads into the same defaults.

A method's or combiner's own settings (Emb's ``emb_dim``, SWN's ``hard_sharing`` and ``tile``;
a registered combiner's temperature)
are declared by the component itself, in its ``options`` (name -> default), set through
``ShareConfig(options={...})``, and recorded in ``PlanOptions.components``;
:func:`own_options` resolves them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ssnfx.core.errors import PlanError
from ssnfx.core.jit import JIT_NUMEL

__all__ = ["PlanOptions", "own_options", "MOVED_TO_OPTIONS"]

#: Settings that were ShareConfig fields and plan options and are now a component's own
#: (``ShareConfig.options``, ``PlanOptions.components``), each with the plan version from which
#: plans record them there: Emb's ``emb_dim``, SWN's ``hard_sharing`` and ``tile``. Older
#: configs and plans read them into the component that declares them.
MOVED_TO_OPTIONS = {"emb_dim": 4, "hard_sharing": 5, "tile": 5}


@dataclass(frozen=True)
class PlanOptions:
    """How a plan's stores are laid out and generated.

    Attributes:
        candidates: candidate blocks per SuperWeight (SSN Sec. 3.1's |C|; 1 for round robin).
        seed: the seed of the store's and the coefficients' initialisation.
        strategy: how the groups were found (a data-free strategy's name, or ``"search"``).
        refine_at: the fraction of training after which ``ssnfx.training`` refines a
            hard-shared plan (SWN Sec. 2.2); None when there is nothing to refine.
        selection: how SuperWeights select their candidates (``"blocks"`` or ``"resized"``).
        split: how the budget was split between groups (``"largest-first"``,
            ``"proportional"``).
        generation: ``"batched"`` (every weight at the start of a call), ``"jit"`` (each right
            before its use) or ``"auto"`` (``"jit"`` for weights of ``jit_numel`` elements or
            more, batched for the others; :meth:`ssnfx.core.plan.SharingPlan.just_in_time`).
        jit_numel: the least size of a weight made just in time in the ``"auto"`` mode.
        components: the plan's method's and combiner's own settings, as resolved
            (:func:`own_options`; ``{"emb_dim": 24}`` for the ``emb`` combiner, SWN's
            ``hard_sharing`` and the ``tile`` it used).

    Example:
        >>> options = PlanOptions(generation="jit")
        >>> PlanOptions.from_dict(options.to_dict()) == options
        True
    """

    candidates: int = 4
    seed: int = 0
    strategy: str = "auto"
    refine_at: float | None = None
    selection: str = "blocks"
    split: str = "largest-first"
    generation: str = "auto"
    jit_numel: int = JIT_NUMEL
    components: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], strict: bool = True) -> PlanOptions:
        """The options in ``d`` (a plan's ``options``, or the ``hyper`` of an older plan, read
        with ``strict=False``); absent ones take their defaults, unknown ones are an error naming
        them (ignored when not ``strict``)."""
        if not isinstance(d, dict):
            raise PlanError(f"plan.options must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if not strict:
            d, unknown = {k: v for k, v in d.items() if k in known}, []
        if unknown:
            raise PlanError(f"plan.options has unknown entries {unknown} (known: "
                            f"{sorted(known)}): a plan from a newer ssnfx, or edited")
        return cls(**d)


def _same_kind(value: Any, default: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def own_options(component: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    """``component``'s own settings (its ``options``: name -> default) with the values of
    ``given`` (a ShareConfig's ``options``, a plan's ``components``) for those it declares.

    Raises:
        PlanError: a value is not of its default's type (an int for a float default is one).

    Example:
        >>> from ssnfx.core.combiners import get_combiner
        >>> own_options(get_combiner("emb"), {"emb_dim": 8, "temperature": 2.0})
        {'emb_dim': 8}
        >>> own_options(get_combiner("linear"), {"emb_dim": 8})
        {}
    """
    out = {}
    for name, default in component.options.items():
        value = given.get(name, default)
        if not _same_kind(value, default):
            raise PlanError(f"{type(component).__name__}'s option {name!r} must be of the type "
                            f"of its default {default!r}, got {value!r}")
        out[name] = value
    return out
