"""rewrite: replace every shared parameter read by the output of a weight generator.

For each parameter group the graph gains one ``call_module`` node (``ssnfx.<group>``) right after
the inputs, which generates all of the group's weights at once, and one ``getitem`` per slot.
Every ``get_attr`` of a shared slot is replaced by its ``getitem``; a leaf module that owns shared
parameters is called through :func:`call_leaf` (``torch.func.functional_call``) with them. The
original shared parameters are not copied into the result: its ``parameters()`` are the stores,
the coefficients and the private parameters.

:func:`bind` applies the same plan and store to the user's model itself instead of its graph
(what :func:`ssnfx.share` returns: the user's class; see :mod:`ssnfx.core.shared_model`).
"""
from __future__ import annotations

import copy
import operator
from collections.abc import Iterable
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
from ssnfx.core.jit import regenerating
from ssnfx.core.jit import weight as jit_weight
from ssnfx.core.layer_kinds import kind_of
from ssnfx.core.leaf_call import call_leaf
from ssnfx.core.markers import STORE, Meta
from ssnfx.core.plan import SharingPlan, Slot
from ssnfx.core.plan_checks import validate_plan
from ssnfx.core.shared_model import bind_store
from ssnfx.core.store import ParameterStore
from ssnfx.core.variance import sample_std
from ssnfx.passes.tracing import as_traced, check_traced_parameters, graph_slots

__all__ = ["rewrite", "bind", "apply_store", "target_stds", "call_leaf"]



def _check(plan: SharingPlan, found: dict[str, Any]) -> None:
    """The plan must describe this model: same slots, same shapes, each read as the plan says
    (the role and kind choose the weight's initial scale; a leaf's weights go in through
    functional_call)."""
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
    for s in plan.slots:
        for key in ("role", "kind", "leaf"):
            mine, theirs = getattr(s, key), getattr(found[s.name], key)
            if mine != theirs:
                raise PlanError(f"the plan's slot {s.name!r} has {key} {mine!r}, but the model "
                                f"reads it as {theirs!r}: the plan was edited or made for "
                                f"another model; make it again with ssnfx.make_plan")


def rewrite(gm: fx.GraphModule, plan: SharingPlan) -> fx.GraphModule:
    """Apply a SharingPlan to a traced model.

    Args:
        gm: the output of :func:`ssnfx.trace` (not modified).
        plan: a plan for this model, from :func:`ssnfx.make_plan` or the search pass.

    Returns:
        A new GraphModule computing the same function as ``gm`` with generated weights. Its
        store is ``shared.ssnfx`` and its plan ``shared.ssnfx.plan``.

    Raises:
        PlanError: the plan does not match the model's slots, a parameter was replaced after
            tracing, or the model already has an attribute named ``ssnfx``.

    Example:
        >>> import torch, torchvision, ssnfx
        >>> gm = ssnfx.trace(torchvision.models.resnet18())
        >>> shared = ssnfx.rewrite(gm, ssnfx.make_plan(gm, budget=0.1))
        >>> n = sum(p.numel() for p in shared.parameters())
        >>> 0.95 * 0.1 * 11689512 <= n <= 0.1 * 11689512
        True
    """
    gm = as_traced(gm)
    return apply_store(gm, _store(gm, plan))


def bind(model: nn.Module, gm: fx.GraphModule, plan: SharingPlan) -> nn.Module:
    """Apply a SharingPlan to the user's model itself: what :func:`ssnfx.share` returns.

    The same checks and the same store as :func:`rewrite`, but the result is a copy of
    ``model`` of its own class (``isinstance`` holds, every method works) whose shared
    parameters are generated from the store at ``shared.ssnfx`` (see
    :mod:`ssnfx.core.shared_model`), rather than a GraphModule.

    Args:
        model: the model ``gm`` was traced from (not modified).
        gm: the output of :func:`ssnfx.trace` for ``model``.
        plan: a plan for this model.

    Example:
        >>> import torch, torchvision, ssnfx
        >>> model = torchvision.models.resnet18()
        >>> gm = ssnfx.trace(model)
        >>> shared = ssnfx.passes.bind(model, gm, ssnfx.make_plan(gm, budget=0.1))
        >>> isinstance(shared, torchvision.models.ResNet), shared(torch.randn(1, 3, 64, 64)).shape
        (True, torch.Size([1, 1000]))
    """
    return bind_store(model, _store(as_traced(gm), plan))


def _store(gm: fx.GraphModule, plan: SharingPlan) -> ParameterStore:
    """The store for ``plan``, once the plan is known to describe ``gm``."""
    validate_plan(plan)
    _check_store_name(gm)  # before the slots: a shared model's would only say "another model"
    check_traced_parameters(gm)
    _check(plan, graph_slots(gm))
    # The store takes the device and dtype of the weights it replaces (the meta device too:
    # nothing is materialised there; see ssnfx.core.initialization.initialize).
    like = next((fetch_attr(gm, s.name) for s in plan.slots if s.shared), None)
    return ParameterStore(plan, target_stds(gm, plan), device=getattr(like, "device", None),
                          dtype=getattr(like, "dtype", None))


def _check_store_name(gm: fx.GraphModule) -> None:
    """The store's attribute name must be free: in the graph, among the model's parameter names
    (a second name of a tied parameter, or of a module registered twice) and among the
    parameters and buffers it never reads, which apply_store puts back under their own names."""
    clash = STORE if not isinstance(gm, fx.GraphModule) and hasattr(gm, STORE) else None
    if clash is None:  # (a shared model of the user's class has no graph to look in)
        reads = [n.target for g in graphs_of(gm).values() for n in g.nodes
                 if n.op in ("get_attr", "call_module")]
        aliases = [a for s in graph_slots(gm).values() for a in s.aliases]
        taken = [*reads, *aliases, *gm.meta.get(Meta.UNREAD, {})]
        clash = next((t for t in taken if t.split(".")[0] == STORE), None)
        if clash is None and hasattr(gm, STORE):
            clash = STORE
    if clash is not None:
        raise PlanError(
            f"the model already has an attribute {STORE!r} ({clash!r}), the name ssnfx gives the "
            f"shared model's parameter store: rename that attribute of the model, or, if the "
            f"model is shared already, train it as it is (ssnfx.fold it to get plain weights)")


def target_stds(gm: fx.GraphModule, plan: SharingPlan) -> dict[str, float]:
    """The standard deviation each shared slot's generated weight should start with."""
    return {s.name: _target_std(fetch_attr(gm, s.name), s) for s in plan.slots if s.shared}


def apply_store(gm: fx.GraphModule, store: nn.Module) -> fx.GraphModule:
    """Rewrite ``gm`` to read its shared slots from ``store``: a module with a ``plan`` and one
    submodule per group whose call returns that group's weights (the ParameterStore, or the
    search pass's provisional store)."""
    _check_store_name(gm)
    plan: SharingPlan = store.plan
    shared = {s.name for s in plan.slots if s.shared}
    graphs = {mode: _rewrite_graph(g, plan, shared) for mode, g in graphs_of(gm).items()}
    root = _copy_private(gm, graphs.values(), shared)
    root.update({f"{STORE}.{g.name}": getattr(store, g.name) for g in plan.groups})
    # The traced parameters stay behind: the shared model no longer holds the shared ones.
    meta = {k: v for k, v in gm.meta.items() if k not in (Meta.UNREAD, Meta.PARAMS)}
    out = build_graph_module(root, graphs, type(gm).__name__, meta, gm.training)
    setattr(out, STORE, store)  # the store itself, with its plan, in place of a bare container
    constants = set(gm.meta.get(Meta.CONSTANTS, ()))
    for name, tensor in gm.meta.get(Meta.UNREAD, {}).items():
        # Parameters and buffers the graph never reads stay, so nothing of the model is lost,
        # and non-persistent buffers stay out of the state_dict.
        assign_attr(out, name, copy_value(tensor, {}), persistent=name not in constants)
    return out


def _rewrite_graph(source: fx.Graph, plan: SharingPlan, shared: set[str]) -> fx.Graph:
    """A copy of ``source`` whose shared parameter reads come from the generators."""
    graph = copy.deepcopy(source)
    anchor = next((n for n in graph.nodes if n.op != "placeholder"), None)
    generated: dict[str, fx.Node] = {}
    started: dict[str, tuple[fx.Node, int]] = {}  # jit: slot -> (its group's step, index)
    with graph.inserting_before(anchor):
        for g in plan.groups:
            jit = set(plan.just_in_time(g))
            if jit:  # a token and the mixing weights; each weight is made where it is read
                step = graph.call_function(jit_begin, (graph.get_attr(f"{STORE}.{g.name}"),))
                started.update((name, (step, i)) for i, name in enumerate(g.slots)
                               if name in jit)
            if len(jit) == len(g.slots):
                continue
            call = graph.call_module(f"{STORE}.{g.name}", (), {"just_in_time": False})
            for i, name in enumerate(g.slots):
                if name not in jit:
                    generated[name] = graph.call_function(operator.getitem, (call, i))

    def weight_of(slot: str, reader: fx.Node) -> fx.Node:
        """The node that gives ``reader`` slot ``slot``'s weight: its group's output, or (just
        in time) its generation, put right before the reader."""
        if slot in generated:
            return generated[slot]
        with graph.inserting_before(reader):
            return graph.call_function(jit_weight, started[slot])

    for node in list(graph.nodes):
        mine = [s for s in node.meta.get(Meta.SLOTS, ()) if s.name in shared]
        if not mine:
            continue
        if node.op == "get_attr":
            node.replace_all_uses_with(weight_of(mine[0].name, node))
            graph.erase_node(node)
            continue
        # A leaf, or the model's own forward: its shared parameters go in by every local name
        # (a tied weight once per name, one weight for all its names), through functional_call.
        weights_of = {s: weight_of(s, node) for s in dict.fromkeys(
            s for s in node.meta[Meta.LEAF_PARAMS].values() if s in shared)}
        local = {n: weights_of[s] for n, s in node.meta[Meta.LEAF_PARAMS].items() if s in shared}
        names, weights = tuple(local), tuple(local.values())
        if node.op == "call_function":  # call_root: the names and weights are its arguments
            root, modules, tensors, _, _, *rest = node.args
            node.args = (root, modules, tensors, names, weights, *rest)
            continue
        with graph.inserting_before(node):
            module = graph.get_attr(node.target)
            call = graph.call_function(call_leaf, (module, names, weights, *node.args),
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
    if started:
        _regenerate_in_backward(graph)
    return graph


def _regenerate_in_backward(graph: fx.Graph) -> None:
    """Run every call that reads a just-in-time weight under the hooks that save how to make
    it again instead of the weight (ssnfx.core.jit.regenerating)."""
    for node in graph.nodes:
        if node.op == "call_function" and node.target not in (jit_begin, jit_weight) and any(
                a.op == "call_function" and a.target is jit_weight
                for a in node.all_input_nodes):
            node.target = regenerating(node.target)


def _copy_private(gm: fx.GraphModule, graphs: Iterable[fx.Graph],
                  shared: set[str]) -> dict[str, Any]:
    """Copies of everything the rewritten graphs read, minus the shared parameters."""
    # Every name of a shared parameter: a tied one is dropped under each, or a copy would keep
    # it (a private duplicate) or leave None in its place.
    names = shared | {a for s in graph_slots(gm).values() if s.name in shared for a in s.aliases}
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
                    if f"{node.target}.{n}" in names]
            for n in drop:  # a memo entry of None: deepcopy does not copy what is deleted next
                memo[id(obj.get_parameter(n))] = None
            mod = copy.deepcopy(obj, memo)
            for n in drop:
                owner, _, attr = n.rpartition(".")
                del (mod.get_submodule(owner) if owner else mod)._parameters[attr]
            kind_of(mod).after_weights_change(mod)  # RNNs cache their weights in a list
            root[node.target] = mod
        else:
            root[node.target] = copy_value(obj, memo)
    return root


def _target_std(p: torch.Tensor, slot: Slot) -> float:
    """The standard deviation a generated weight should start with: that of the layer's own
    initialisation, or, for a layer without values (on the meta device) or initialised to a
    constant (a zeroed head, so that it still receives gradient), PyTorch's default init of the
    layer's kind (N(0, 1) for an embedding, not a fan-in bound)."""
    std = 0.0 if p.is_meta else sample_std(p)
    return std if std > 0 else kind_of(slot).default_std(slot)
