"""ssnfx: cross-layer parameter sharing for any PyTorch model, as a torch.fx compiler.

    shared = ssnfx.share(model, budget=0.1)   # train this: your class, 10% of the parameters
    shared = ssnfx.share(model, 0.1, data=loader, loss_fn=F.cross_entropy)   # learned sharing
    folded = ssnfx.fold(shared)               # deploy this: your class again, plain weights
    ensemble = ssnfx.share([small, medium, large], budget=1.0)   # several models, one store

The top level is the pipeline (share, trace, search, make_plan, rewrite, fold, refine, save,
load, export, report, summary), its configs and plan types, and the errors. Below it, in layers
that import downward only: ``ssnfx.passes`` (the graph passes) over ``ssnfx.core`` (the plan, the
registries of combiners, methods and layer kinds, the store and its generator). Recipes live in
their modules: ``ssnfx.ensemble``, ``ssnfx.anytime``, ``ssnfx.distill``, ``ssnfx.lsm``; export
formats in ``ssnfx.deploy``.

Every name is imported on first use (PEP 562), so that ``import ssnfx`` and ``ssnfx --help``
cost no torch import; ``ssnfx.share`` and ``from ssnfx import share`` work as with eager imports.
"""
# (Private names: the top level's public names are __all__ and the submodules.)
import importlib as _importlib
import importlib.util as _importlib_util
from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:  # what type checkers and the API reference see; _PUBLIC below must agree
    from ssnfx.api import share
    from ssnfx.checkpoint import load, save
    from ssnfx.core.config import ShareConfig
    from ssnfx.core.errors import (
        BudgetError,
        CheckpointError,
        EnsembleError,
        ExportError,
        PlanError,
        SearchError,
        SsnfxError,
        TraceError,
    )
    from ssnfx.core.plan import PLAN_VERSION, GroupPlan, SharingPlan, Slot
    from ssnfx.deploy import export
    from ssnfx.passes import (
        RefineResult,
        SearchConfig,
        fold,
        make_plan,
        refine,
        rewrite,
        search,
        trace,
    )
    from ssnfx.reporting import report, summary

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
    "share": "api", "save": "checkpoint", "load": "checkpoint", "ShareConfig": "core.config",
    **dict.fromkeys(["SsnfxError", "TraceError", "BudgetError", "PlanError", "SearchError",
                     "CheckpointError", "ExportError", "EnsembleError"], "core.errors"),
    "export": "deploy",
    **dict.fromkeys(["trace", "search", "make_plan", "rewrite", "fold", "refine",
                     "SearchConfig", "RefineResult"], "passes"),
    **dict.fromkeys(["SharingPlan", "GroupPlan", "Slot", "PLAN_VERSION"], "core.plan"),
    "report": "reporting", "summary": "reporting",
}


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        value = getattr(_importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value  # once: later reads are plain attribute reads
        return value
    # A submodule (ssnfx.ensemble, ssnfx.passes, ...) is there after `import ssnfx` alone, as
    # it was when the top level imported it eagerly.
    if not name.startswith("_") and _importlib_util.find_spec(f"{__name__}.{name}") is not None:
        return _importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ssnfx' has no attribute {name!r}")


#: The modules of recipes and registries, listed by ``dir(ssnfx)`` beside the top-level names.
_MODULES = ("anytime", "core", "deploy", "distill", "ensemble", "lsm", "passes")


def __dir__() -> list[str]:
    return sorted({*__all__, *_MODULES})
