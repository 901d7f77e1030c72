"""The four passes of ssnfx, each a function over a GraphModule: trace, search, rewrite, fold."""
from .fold import fold
from .rewrite import rewrite
from .trace import register_leaf, slots_of, trace

__all__ = ["trace", "register_leaf", "slots_of", "rewrite", "fold"]
