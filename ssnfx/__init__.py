"""ssnfx: cross-layer parameter sharing for any PyTorch model, as a torch.fx compiler.

    shared = ssnfx.share(model, budget=0.1)   # train this: your class, 10% of the parameters
    shared = ssnfx.share(model, 0.1, data=loader, loss_fn=F.cross_entropy)   # learned sharing
    folded = ssnfx.fold(shared)               # deploy this: your class again, plain weights
    ensemble = ssnfx.share([small, medium, large], budget=1.0)   # several models, one store

The top level is the pipeline (share, trace, search, make_plan, rewrite, fold, refine, save,
load, export, report, summary), its configs and plan types, and the errors. Recipes and extension
registries live in their modules: ``ssnfx.ensemble``, ``ssnfx.anytime``, ``ssnfx.distill``,
``ssnfx.lsm``, ``ssnfx.combiners``, ``ssnfx.export``, ``ssnfx.passes``, ``ssnfx.config``.

Every name is imported on first use (PEP 562), so that ``import ssnfx`` and ``ssnfx --help``
cost no torch import; ``ssnfx.share`` and ``from ssnfx import share`` work as with eager imports.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

from . import _checkout  # noqa: F401  (first: where ssnfx.passes comes from)

if TYPE_CHECKING:  # what type checkers and the API reference see; _PUBLIC below must agree
    from .api import share
    from .checkpoint import load, save
    from .config import ShareConfig
    from .errors import (
        BudgetError,
        CheckpointError,
        EnsembleError,
        ExportError,
        PlanError,
        SearchError,
        SsnfxError,
        TraceError,
    )
    from .export import export
    from .passes import (
        RefineResult,
        SearchConfig,
        fold,
        make_plan,
        refine,
        rewrite,
        search,
        trace,
    )
    from .plan import PLAN_VERSION, GroupPlan, SharingPlan, Slot
    from .report import report, summary

__version__ = "0.1.0"

__all__ = [
    "share", "trace", "search", "make_plan", "rewrite", "fold", "refine",
    "save", "load", "export", "report", "summary",
    "ShareConfig", "SearchConfig", "SharingPlan", "GroupPlan", "Slot", "PLAN_VERSION",
    "RefineResult",
    "SsnfxError", "TraceError", "BudgetError", "PlanError", "SearchError", "CheckpointError",
    "ExportError", "EnsembleError",
    "__version__",
]

#: Each top-level name and the submodule that defines it, imported when the name is first read.
_PUBLIC = {
    "share": "api", "save": "checkpoint", "load": "checkpoint", "ShareConfig": "config",
    **dict.fromkeys(["SsnfxError", "TraceError", "BudgetError", "PlanError", "SearchError",
                     "CheckpointError", "ExportError", "EnsembleError"], "errors"),
    "export": "export",
    **dict.fromkeys(["trace", "search", "make_plan", "rewrite", "fold", "refine",
                     "SearchConfig", "RefineResult"], "passes"),
    **dict.fromkeys(["SharingPlan", "GroupPlan", "Slot", "PLAN_VERSION"], "plan"),
    "report": "report", "summary": "report",
}

#: Names that were once at the top level, and the module that has them now.
_MOVED = {
    **dict.fromkeys(["Members", "member", "member_names", "select_members", "ensemble_loss",
                     "EnsembleLoss", "EnsembleAverage", "average_probabilities"], "ensemble"),
    **dict.fromkeys(["member_costs", "order_by_cost", "subset_accuracy", "anytime_subset",
                     "anytime_frontier"], "anytime"),
    **dict.fromkeys(["distillation_loss", "DistillationLoss", "with_teacher"], "distill"),
    **dict.fromkeys(["layer_similarity", "LayerSimilarity", "identical_weights"], "lsm"),
    **dict.fromkeys(["Combiner", "COMBINER_REGISTRY", "register_combiner"], "combiners"),
    **dict.fromkeys(["ExportFormat", "EXPORT_FORMATS", "register_export_format",
                     "export_torchscript", "export_pt2"], "export"),
    **dict.fromkeys(["register_leaf", "slots_of", "similarity_graph"], "passes"),
    **dict.fromkeys(["METHODS", "COMBINERS"], "config"),
    "reset_parameters": "initialization",
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value  # once: later reads are plain attribute reads
        return value
    if name in _MOVED:
        # ssnfx.export is the function, so the import statement is the form that always works.
        module = _MOVED[name]
        new = "initialize" if name == "reset_parameters" else name
        raise AttributeError(f"ssnfx.{name} moved: use ssnfx.{module}.{new} "
                             f"(from ssnfx.{module} import {new})")
    # A submodule (ssnfx.ensemble, ssnfx.passes, ...) is there after `import ssnfx` alone, as
    # it was when the top level imported it eagerly.
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ssnfx' has no attribute {name!r}")


#: The modules of recipes and registries, listed by ``dir(ssnfx)`` beside the top-level names.
_MODULES = ("anytime", "combiners", "config", "distill", "ensemble", "lsm", "passes")


def __dir__() -> list[str]:
    return sorted({*__all__, *_MODULES})


class _TopLevel(types.ModuleType):
    """This package, whose ``export`` and ``report`` are the functions although submodules of
    the same names exist: importing a submodule binds it on its package (the import system's
    ``setattr``), which would replace the lazily imported function by the module."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _PUBLIC.get(name) == name:
            return  # the function is read from the submodule on first use instead
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _TopLevel
