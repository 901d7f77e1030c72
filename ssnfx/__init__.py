"""ssnfx: cross-layer parameter sharing for any PyTorch model, as a torch.fx compiler.

    shared = ssnfx.share(model, budget=0.1)   # train this: your class, 10% of the parameters
    shared = ssnfx.share(model, 0.1, data=loader, loss_fn=F.cross_entropy)   # learned sharing
    folded = ssnfx.fold(shared)               # deploy this: your class again, plain weights
    ensemble = ssnfx.share([small, medium, large], budget=1.0)   # several models, one store

The top level is the pipeline (share, trace, search, make_plan, rewrite, fold, refine, save,
load, export, report, summary), its configs and plan types, and the errors. Recipes and extension
registries live in their modules: ``ssnfx.ensemble``, ``ssnfx.anytime``, ``ssnfx.distill``,
``ssnfx.lsm``, ``ssnfx.combiners``, ``ssnfx.export``, ``ssnfx.passes``, ``ssnfx.config``.
"""
from . import _checkout  # noqa: F401, I001  (first: where ssnfx.passes comes from)
from . import anytime, distill, ensemble, lsm  # noqa: F401  (ssnfx.anytime etc. after import ssnfx)
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
from .passes import RefineResult, SearchConfig, fold, make_plan, refine, rewrite, search, trace
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


def __getattr__(name: str):
    # ssnfx.export is the function, so the import statement is the form that always works.
    if name in _MOVED:
        module = _MOVED[name]
        new = "initialize" if name == "reset_parameters" else name
        raise AttributeError(f"ssnfx.{name} moved: use ssnfx.{module}.{new} "
                             f"(from ssnfx.{module} import {new})")
    raise AttributeError(f"module 'ssnfx' has no attribute {name!r}")
