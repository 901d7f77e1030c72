"""What marks a shared model, and the names under which the passes annotate a graph.

One definition for every pass and tool: a shared model is a module whose :data:`STORE`
attribute is a parameter store holding a plan; the passes hand each other what they found in
``node.meta`` and ``GraphModule.meta`` under the keys of :class:`Meta`.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

__all__ = ["STORE", "ROOT", "Meta", "store_of", "require_store"]

#: Attribute name of the ParameterStore at the root of a shared GraphModule.
STORE = "ssnfx"
#: Attribute name of the RootShell in a GraphModule whose model is one leaf call.
ROOT = "ssnfx_root"


class Meta:
    """Keys of ``node.meta`` (per node) and ``GraphModule.meta`` (per model) written by the
    passes."""

    #: node: the Slots the node reads (trace).
    SLOTS = "ssnfx_slots"
    #: node of a leaf call: its local parameter names -> slot names (trace).
    LEAF_PARAMS = "ssnfx_leaf_params"
    #: node marking a member's output: the member's class name (Members).
    MEMBER = "ssnfx_member_class"
    #: model: how it was traced (leaves, automatic leaves and why, concrete_args).
    TRACE = "ssnfx_trace"
    #: model: the traced Parameter objects by slot name, to detect replacements.
    PARAMS = "ssnfx_params"
    #: model: parameters and buffers the graph never reads, kept by rewrite.
    UNREAD = "ssnfx_unread"
    #: model: tensor attributes kept out of the state_dict (non-persistent).
    CONSTANTS = "ssnfx_constants"
    #: model: the modules' state_dict versions, restored on every GraphModule built.
    VERSIONS = "ssnfx_versions"
    #: model: the root module's forward and backward hooks, installed on every GraphModule
    #: built (torch.fx traces the root's forward, not its ``__call__``, which runs them).
    ROOT_HOOKS = "ssnfx_root_hooks"


def store_of(module: Any) -> nn.Module | None:
    """The parameter store of a shared model, or None for anything else."""
    store = getattr(module, STORE, None)
    return store if isinstance(store, nn.Module) and hasattr(store, "plan") else None


def require_store(module: Any, what: str, error: type[Exception]) -> nn.Module:
    """The store of ``module``, or ``error`` saying that ``what`` expects a shared model."""
    store = store_of(module)
    if store is None:
        raise error(f"{what} expects a shared model (from ssnfx.share or ssnfx.rewrite); "
                    f"{type(module).__name__} has no parameter store {STORE!r}")
    return store
