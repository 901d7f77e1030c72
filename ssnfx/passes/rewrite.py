"""rewrite: replace every shared parameter read by the output of a weight generator.

For each parameter group the graph gains one ``call_module`` node (``ssnfx.<group>``) right after
the inputs, which generates all of the group's weights at once, and one ``getitem`` per slot.
Every ``get_attr`` of a shared slot is replaced by its ``getitem``; a leaf module that owns shared
parameters is called through :func:`call_leaf` (``torch.func.functional_call``) with them. The
original shared parameters are not copied into the result: its ``parameters()`` are the stores,
the coefficients and the private parameters.
"""
from __future__ import annotations

import copy
import operator
from collections.abc import Iterable
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch.func import functional_call

from ..errors import PlanError
from ..generator import ParameterStore, sample_std
from ..graph_module import assign_attr, build_graph_module, copy_value, fetch_attr, graphs_of
from ..plan import SharingPlan
from .trace import graph_slots

__all__ = ["STORE", "rewrite", "apply_store", "target_stds", "call_leaf"]

#: Attribute name of the ParameterStore at the root of a shared GraphModule.
STORE = "ssnfx"


def call_leaf(module: nn.Module, names: tuple[str, ...], weights: tuple[torch.Tensor, ...],
              *args: Any, **kwargs: Any) -> Any:
    """Call a leaf module with some of its parameters supplied (generated) from outside."""
    return functional_call(module, dict(zip(names, weights)), args, kwargs, strict=False)


def _check(plan: SharingPlan, found: dict[str, Any]) -> None:
    """The plan must describe this model: same slots, same shapes."""
    planned = {s.name: tuple(s.shape) for s in plan.slots}
    actual = {n: tuple(s.shape) for n, s in found.items()}
    if planned != actual:
        missing = sorted(set(planned) - set(actual))[:3]
        extra = sorted(set(actual) - set(planned))[:3]
        wrong = [n for n in planned if n in actual and planned[n] != actual[n]][:3]
        raise PlanError(
            "the plan was made for another model: "
            + "; ".join(x for x in (
                f"slots not in this model: {missing}" if missing else "",
                f"slots the plan lacks: {extra}" if extra else "",
                "shapes differ for " + ", ".join(f"{n} (plan {planned[n]}, model {actual[n]})"
                                                 for n in wrong) if wrong else "") if x))


def rewrite(gm: fx.GraphModule, plan: SharingPlan) -> fx.GraphModule:
    """Apply a SharingPlan to a traced model.

    Args:
        gm: the output of :func:`ssnfx.trace` (not modified).
        plan: a plan for this model, from :func:`ssnfx.make_plan` or the search pass.

    Returns:
        A new GraphModule computing the same function as ``gm`` with generated weights. Its
        store is ``shared.ssnfx`` and its plan ``shared.ssnfx.plan``.

    Raises:
        PlanError: the plan does not match the model's slots.

    Example:
        >>> import torch, torchvision, ssnfx
        >>> gm = ssnfx.trace(torchvision.models.resnet18())
        >>> shared = ssnfx.rewrite(gm, ssnfx.make_plan(gm, budget=0.1))
        >>> n = sum(p.numel() for p in shared.parameters())
        >>> 0.95 * 0.1 * 11689512 <= n <= 0.1 * 11689512
        True
    """
    _check(plan, graph_slots(gm))
    if hasattr(gm, STORE):
        raise PlanError(f"the model already has an attribute {STORE!r}: it is shared already, "
                        f"or rename that attribute")
    return apply_store(gm, ParameterStore(plan, target_stds(gm, plan)))


def target_stds(gm: fx.GraphModule, plan: SharingPlan) -> dict[str, float]:
    """The standard deviation each shared slot's generated weight should start with."""
    return {s.name: _target_std(fetch_attr(gm, s.name)) for s in plan.slots if s.shared}


def apply_store(gm: fx.GraphModule, store: nn.Module) -> fx.GraphModule:
    """Rewrite ``gm`` to read its shared slots from ``store``: a module with a ``plan`` and one
    submodule per group whose call returns that group's weights (the ParameterStore, or the
    search pass's provisional store)."""
    plan: SharingPlan = store.plan
    shared = {s.name for s in plan.slots if s.shared}
    graphs = {mode: _rewrite_graph(g, plan, shared) for mode, g in graphs_of(gm).items()}
    root = _copy_private(gm, graphs.values(), shared)
    root.update({f"{STORE}.{g.name}": getattr(store, g.name) for g in plan.groups})
    meta = {k: v for k, v in gm.meta.items() if k != "ssnfx_unread"}
    out = build_graph_module(root, graphs, type(gm).__name__, meta, gm.training)
    setattr(out, STORE, store)  # the store itself, with its plan, in place of a bare container
    for name, tensor in gm.meta.get("ssnfx_unread", {}).items():
        # Parameters and buffers the graph never reads stay, so nothing of the model is lost.
        assign_attr(out, name, copy_value(tensor, {}))
    return out


def _rewrite_graph(source: fx.Graph, plan: SharingPlan, shared: set[str]) -> fx.Graph:
    """A copy of ``source`` whose shared parameter reads come from the generators."""
    graph = copy.deepcopy(source)
    anchor = next((n for n in graph.nodes if n.op != "placeholder"), None)
    generated: dict[str, fx.Node] = {}
    with graph.inserting_before(anchor):
        for g in plan.groups:
            call = graph.call_module(f"{STORE}.{g.name}", ())
            for i, name in enumerate(g.slots):
                generated[name] = graph.call_function(operator.getitem, (call, i))
    for node in list(graph.nodes):
        mine = [s for s in node.meta.get("ssnfx_slots", ()) if s.name in shared]
        if not mine:
            continue
        if node.op == "get_attr":
            node.replace_all_uses_with(generated[mine[0].name])
            graph.erase_node(node)
        else:  # a leaf module: supply its shared parameters through functional_call
            local = tuple(s.name[len(node.target) + 1:] for s in mine)
            with graph.inserting_before(node):
                module = graph.get_attr(node.target)
                call = graph.call_function(
                    call_leaf, (module, local, tuple(generated[s.name] for s in mine), *node.args),
                    dict(node.kwargs))
            call.meta = dict(node.meta)
            node.replace_all_uses_with(call)
            graph.erase_node(node)
    # Drop what this graph does not read (an eval graph without the auxiliary head): getitems
    # first, then a generator none of whose weights is used.
    for node in reversed(list(graph.nodes)):
        if node.op in ("call_function", "call_module") and not node.users and (
                node.target is operator.getitem or str(node.target).startswith(f"{STORE}.")):
            graph.erase_node(node)
    return graph


def _copy_private(gm: fx.GraphModule, graphs: Iterable[fx.Graph],
                  shared: set[str]) -> dict[str, Any]:
    """Copies of everything the rewritten graphs read, minus the shared parameters."""
    memo: dict[int, Any] = {}
    root: dict[str, Any] = {}
    for node in (n for g in graphs for n in g.nodes):
        if node.op not in ("get_attr", "call_module") or node.target in root:
            continue
        if node.target.split(".")[0] == STORE:
            continue
        obj = fetch_attr(gm, node.target)
        if isinstance(obj, nn.Module):
            drop = [n for n, _ in obj.named_parameters(remove_duplicate=False)
                    if f"{node.target}.{n}" in shared]
            for n in drop:  # a memo entry of None: deepcopy does not copy what is deleted next
                memo[id(obj.get_parameter(n))] = None
            mod = copy.deepcopy(obj, memo)
            for n in drop:
                owner, _, attr = n.rpartition(".")
                del (mod.get_submodule(owner) if owner else mod)._parameters[attr]
            if hasattr(mod, "_init_flat_weights"):  # RNNs cache their weights in a list
                mod._init_flat_weights()
            root[node.target] = mod
        else:
            root[node.target] = copy_value(obj, memo)
    return root


def _target_std(p: torch.Tensor) -> float:
    """The standard deviation a generated weight should start with: that of the layer's own
    initialisation, or, for a layer initialised to a constant (a zeroed head), PyTorch's default
    fan-in init, so that it still receives gradient."""
    std = sample_std(p)
    if std > 0:
        return std
    fan_in = max(1, p.numel() // max(1, p.shape[0])) if p.dim() > 1 else p.numel()
    return 1.0 / (3.0 * fan_in) ** 0.5
