"""ssnfx: cross-layer parameter sharing for any PyTorch model, as a torch.fx compiler.

    shared = ssnfx.share(model, budget=0.1)   # train this: 10% of the parameters
    shared = ssnfx.share(model, 0.1, data=loader, loss_fn=F.cross_entropy)   # learned sharing
    folded = ssnfx.fold(shared)               # deploy this: the original graph, plain weights
"""
from .api import share
from .checkpoint import load, save
from .config import COMBINERS, METHODS, ShareConfig
from .errors import (
    BudgetError,
    CheckpointError,
    ExportError,
    PlanError,
    SearchError,
    SsnfxError,
    TraceError,
)
from .export import export_pt2, export_torchscript
from .passes import (
    SearchConfig,
    fold,
    register_leaf,
    rewrite,
    search,
    similarity_graph,
    slots_of,
    trace,
)
from .plan import PLAN_VERSION, GroupPlan, SharingPlan, Slot
from .planner import make_plan
from .refine import RefineResult, refine
from .report import report

__version__ = "0.1.0"

__all__ = [
    "share", "trace", "search", "make_plan", "rewrite", "fold", "register_leaf", "slots_of",
    "SearchConfig", "similarity_graph", "SearchError", "refine", "RefineResult",
    "save", "load", "export_torchscript", "export_pt2", "report",
    "ShareConfig", "SharingPlan", "GroupPlan", "Slot", "PLAN_VERSION", "METHODS", "COMBINERS",
    "SsnfxError", "TraceError", "BudgetError", "PlanError", "CheckpointError", "ExportError",
    "__version__",
]
