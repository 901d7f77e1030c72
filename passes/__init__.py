"""The compiler's passes, each a function over a GraphModule, installed as ``ssnfx.passes``.

trace (find every parameter read), search with its planner (the SharingPlan, from data or
without), rewrite (generators in place of parameter reads), fold (static weights back), refine
(SWN's untying of hard-shared coefficients) and member extraction (one model of several that
share a store). They hand each other GraphModules and SharingPlans only.
"""
from ssnfx.passes.folding import fold
from ssnfx.passes.members import member, member_names, select_members
from ssnfx.passes.planner import make_plan
from ssnfx.passes.refining import RefineResult, refine
from ssnfx.passes.rewriting import bind, rewrite
from ssnfx.passes.searching import SearchConfig, search, similarity_graph
from ssnfx.passes.tracing import register_leaf, slots_of, trace

__all__ = ["trace", "register_leaf", "slots_of", "search", "SearchConfig", "similarity_graph",
           "make_plan", "rewrite", "bind", "fold", "refine", "RefineResult", "member",
           "member_names", "select_members"]
