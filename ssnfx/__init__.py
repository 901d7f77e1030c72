"""ssnfx: cross-layer parameter sharing for any PyTorch model, as a torch.fx compiler.

    shared = ssnfx.share(model, budget=0.1)   # train this: 10% of the parameters
    shared = ssnfx.share(model, 0.1, data=loader, loss_fn=F.cross_entropy)   # learned sharing
    folded = ssnfx.fold(shared)               # deploy this: the original graph, plain weights
    ensemble = ssnfx.share([small, medium, large], budget=1.0)   # several models, one store
"""
from . import _checkout  # noqa: F401  (first: where ssnfx.passes comes from)
from .anytime import anytime_frontier, anytime_subset, member_costs, order_by_cost, subset_accuracy
from .api import share
from .checkpoint import load, save
from .combiners import COMBINER_REGISTRY, Combiner, register_combiner
from .config import COMBINERS, METHODS, ShareConfig
from .distill import DistillationLoss, distillation_loss, with_teacher
from .ensemble import (
    EnsembleAverage,
    EnsembleLoss,
    Members,
    average_probabilities,
    ensemble,
    ensemble_loss,
)
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
from .export import (
    EXPORT_FORMATS,
    ExportFormat,
    export,
    export_pt2,
    export_torchscript,
    register_export_format,
)
from .lsm import LayerSimilarity, identical_weights, layer_similarity
from .passes import (
    RefineResult,
    SearchConfig,
    fold,
    make_plan,
    member,
    member_names,
    refine,
    register_leaf,
    rewrite,
    search,
    select_members,
    similarity_graph,
    slots_of,
    trace,
)
from .plan import PLAN_VERSION, GroupPlan, SharingPlan, Slot
from .report import report

__version__ = "0.1.0"

__all__ = [
    "share", "trace", "search", "make_plan", "rewrite", "fold", "register_leaf", "slots_of",
    "SearchConfig", "similarity_graph", "SearchError", "refine", "RefineResult",
    "save", "load", "export", "export_torchscript", "export_pt2", "ExportFormat",
    "EXPORT_FORMATS", "register_export_format", "report",
    "ShareConfig", "SharingPlan", "GroupPlan", "Slot", "PLAN_VERSION", "METHODS", "COMBINERS",
    "Combiner", "COMBINER_REGISTRY", "register_combiner",
    "SsnfxError", "TraceError", "BudgetError", "PlanError", "CheckpointError", "ExportError",
    "Members", "member", "member_names", "select_members", "ensemble", "ensemble_loss",
    "EnsembleLoss", "EnsembleAverage", "average_probabilities", "EnsembleError",
    "member_costs", "order_by_cost", "subset_accuracy", "anytime_subset", "anytime_frontier",
    "distillation_loss", "DistillationLoss", "with_teacher",
    "layer_similarity", "LayerSimilarity", "identical_weights",
    "__version__",
]
