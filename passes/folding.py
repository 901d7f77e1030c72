"""fold: evaluate every weight generator once and put the weights back as plain parameters.

The folded GraphModule is the traced model's own graph (generators gone, leaf modules called as
modules again) with static weights under the original parameter names, so

    original.load_state_dict(ssnfx.fold(shared).state_dict())

loads strictly into the user's unmodified model class. Weights that hard sharing made identical
stay one tensor. Deployment pays nothing for sharing: same graph, same cost.
"""
from __future__ import annotations

import copy
import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ssnfx.core.errors import PlanError
from ssnfx.core.graph_module import (
    assign_attr,
    build_graph_module,
    copy_value,
    fetch_attr,
    graphs_of,
)
from ssnfx.core.jit import begin as jit_begin
from ssnfx.core.jit import unwrap
from ssnfx.core.jit import weight as jit_weight
from ssnfx.core.layer_kinds import kind_of
from ssnfx.core.leaf_call import call_leaf, call_root
from ssnfx.core.markers import STORE, Meta, require_store
from ssnfx.core.plan import SharingPlan
from ssnfx.core.shared_model import fold_model, is_bound

__all__ = ["fold"]


def fold(shared: fx.GraphModule) -> fx.GraphModule:
    """Replace generated weights by their current values.

    Args:
        shared: a GraphModule produced by :func:`ssnfx.rewrite` or :func:`ssnfx.share` (not
            modified).

    Returns:
        An independent GraphModule with the original graph and parameter names, in the mode
        (train/eval) of ``shared``.

    Example:
        >>> import torch, torchvision, ssnfx
        >>> shared = ssnfx.share(torchvision.models.resnet18(), budget=0.1).eval()
        >>> folded = ssnfx.fold(shared)
        >>> x = torch.randn(1, 3, 64, 64)
        >>> torch.testing.assert_close(folded(x), shared(x), rtol=1e-5, atol=1e-5)
        >>> torchvision.models.resnet18().load_state_dict(folded.state_dict())
        <All keys matched successfully>
    """
    if is_bound(shared):  # the user's class: plain weights back into it
        return fold_model(shared)
    store = require_store(shared, "fold", PlanError)
    plan = store.plan
    with torch.no_grad():
        values = store.generate(merge_equal=True)
    memo: dict[int, Any] = {}
    params: dict[str, nn.Parameter] = {}
    for name, w in values.items():
        if id(w) not in memo:
            memo[id(w)] = nn.Parameter(w.detach().clone())
        params[name] = memo[id(w)]
    root: dict[str, Any] = {}
    graphs = {mode: _fold_graph(g, shared, plan, params, root, memo)
              for mode, g in graphs_of(shared).items()}
    for graph in graphs.values():
        for node in graph.nodes:
            if node.op in ("get_attr", "call_module") and node.target not in root:
                root[node.target] = copy_value(fetch_attr(shared, node.target), memo)
    folded = build_graph_module(root, graphs, type(shared).__name__, shared.meta, shared.training)
    for s in plan.slots:
        # Every name of a tied parameter, private ones too (a module registered under two names
        # keeps a private bias): the user's model expects each name in the state_dict.
        for alias in s.aliases:
            assign_attr(folded, alias, params[s.name] if s.shared else fetch_attr(folded, s.name))
    known = {n for n, _ in (*folded.named_parameters(remove_duplicate=False),
                            *folded.named_buffers(remove_duplicate=False))}
    for name, t in (*shared.named_parameters(remove_duplicate=False),
                    *shared.named_buffers(remove_duplicate=False)):
        if name.split(".")[0] != STORE and name not in known:  # unread parameters and buffers
            assign_attr(folded, name, copy_value(t, memo),
                        persistent=name not in folded.meta.get(Meta.CONSTANTS, ()))
    return folded


def _fold_graph(source: fx.Graph, shared: fx.GraphModule, plan: SharingPlan,
                params: dict[str, nn.Parameter], root: dict[str, Any],
                memo: dict[int, Any]) -> fx.Graph:
    """A copy of ``source`` reading ``params`` where it read generators; fills ``root``. The
    leaves are copied with ``memo``, as everything else is, so that a private tensor they share
    with another module stays one tensor."""
    graph = copy.deepcopy(source)
    by_group = {f"{STORE}.{g.name}": g.slots for g in plan.groups}
    for node in list(graph.nodes):
        if node.op == "call_function":
            node.target = unwrap(node.target)  # the layer's own call, not its regenerating one
        # A generated weight: a getitem of its group's batch, or (just in time) its own call.
        group = node.args[0] if node.op == "call_function" and node.target is operator.getitem \
            else node.args[0].args[0] if node.op == "call_function" \
            and node.target is jit_weight else None
        if isinstance(group, fx.Node) and group.target in by_group:
            name = by_group[group.target][node.args[1]]
            with graph.inserting_before(node):
                node.replace_all_uses_with(graph.get_attr(name))
            graph.erase_node(node)
            root[name] = params[name]
        elif node.op == "call_function" and node.target is call_leaf:
            module_node, names, weights, *args = node.args
            target = module_node.target
            if target not in root:
                mod = copy_value(fetch_attr(shared, target), memo)
                for local, w in zip(names, weights):  # w: the get_attr that replaced a getitem
                    assign_attr(mod, local, params[w.target])
                kind_of(mod).after_weights_change(mod)
                root[target] = mod
            with graph.inserting_before(node):
                new = graph.call_module(target, tuple(args), dict(node.kwargs))
            new.meta = dict(node.meta)
            node.replace_all_uses_with(new)
            graph.erase_node(node)
            for w in (*dict.fromkeys(weights), module_node):  # a tied weight comes twice
                if not w.users:
                    graph.erase_node(w)
        elif node.op == "call_function" and node.target is call_root:
            # The model's own forward: its children get their weights back, by local name.
            shell, modules, tensors, names, weights, *rest = node.args
            for local, w in zip(names, weights):
                child, _, below = local.partition(".")
                target = modules[child].target
                if target not in root:
                    root[target] = copy_value(fetch_attr(shared, target), memo)
                assign_attr(root[target], below, params[w.target])
            node.args = (shell, modules, tensors, (), (), *rest)
            for w in dict.fromkeys(weights):
                if not w.users:
                    graph.erase_node(w)
    for node in reversed(graph.nodes):  # the generators, and (just in time) their steps
        if not node.users and (node.op == "call_module" and node.target in by_group
                               or node.op == "call_function" and node.target is jit_begin
                               or node.op == "get_attr" and node.target in by_group):
            graph.erase_node(node)
    return graph
