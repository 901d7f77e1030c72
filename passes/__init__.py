"""The four passes of ssnfx, each a function over a GraphModule: trace, search, rewrite, fold."""
from .fold import fold
from .rewrite import rewrite
from .search import SearchConfig, search, similarity_graph
from .trace import register_leaf, slots_of, trace

__all__ = ["trace", "register_leaf", "slots_of", "search", "SearchConfig", "similarity_graph",
           "rewrite", "fold"]
