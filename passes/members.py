"""member extraction: one member, or a subset, of a model of several members, as its own
GraphModule (SWN Sec. 4's ensembles and anytime inference from one store).

A model from ``ssnfx.share([m1, m2, ...])`` marks each member's output with
:func:`ssnfx.core.members.member_output`; this pass keeps the outputs asked for and removes what
only the others need (dead-code elimination), shared, folded or traced alike. From a folded
model a single member's parameters get the member's own names, so that its state_dict loads
strictly into a fresh instance of its class and it exports on its own.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch.fx as fx
import torch.nn as nn

from ssnfx.core.errors import EnsembleError
from ssnfx.core.graph_module import assign_attr, build_graph_module, fetch_attr, graphs_of
from ssnfx.core.markers import STORE, Meta, store_of
from ssnfx.core.members import Members, member_output

__all__ = ["member_names", "member", "select_members", "check_members"]


def _markers(graph: fx.Graph) -> dict[str, fx.Node]:
    return {n.args[0]: n for n in graph.nodes
            if n.op == "call_function" and n.target is member_output}


def member_names(model: nn.Module) -> list[str]:
    """The members of a :class:`Members` model or of a traced, shared or folded one, in output
    order; ``[]`` for any other model.

    Example:
        >>> import torch, ssnfx
        >>> shared = ssnfx.share([torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)], budget=0.5)
        >>> ssnfx.ensemble.member_names(shared)
        ['0', '1']
    """
    if isinstance(model, Members):
        return list(model.names)
    if not isinstance(model, fx.GraphModule):
        return []
    names: dict[str, None] = {}
    for graph in graphs_of(model).values():
        markers = _markers(graph)
        output = next(n for n in graph.nodes if n.op == "output").args[0]
        # The output's order first (select_members may reorder), then any other marker.
        listed = output if isinstance(output, (tuple, list)) else ()
        names.update(dict.fromkeys(n.args[0] for n in listed
                                   if isinstance(n, fx.Node) and n in markers.values()))
        names.update(dict.fromkeys(markers))
    return list(names)


def check_members(model: nn.Module, names: Sequence[str]) -> None:
    """Raise EnsembleError unless ``model`` has members and ``names`` are among them."""
    known = member_names(model)
    if not known:
        raise EnsembleError(
            f"{type(model).__name__} is not a model of several members: make one with "
            f"ssnfx.share([m1, m2, ...]) (or trace ssnfx.ensemble.Members([...])), then fold it "
            f"if needed")
    missing = [n for n in names if n not in known]
    if missing:
        raise EnsembleError(f"the model has no member {missing[0]!r}; its members are {known}")


def _extract(model: fx.GraphModule, names: Sequence[str], single: bool) -> fx.GraphModule:
    """The graph(s) of ``model`` computing only ``names``' outputs, over what they read."""
    check_members(model, names)  # (a model of several members is a GraphModule)
    if len(set(names)) != len(names):
        raise EnsembleError(f"members named more than once: {list(names)}")
    store = store_of(model)
    # A folded single member gets its own parameter names; a shared one keeps the qualified
    # names, since its store's plan generates the weights under those names.
    prefix = f"{names[0]}." if single and store is None else ""
    graphs = {}
    for mode, source in graphs_of(model).items():
        graph = copy.deepcopy(source)
        markers = _markers(graph)
        output = next(n for n in graph.nodes if n.op == "output")
        if single:
            output.args = (markers[names[0]].args[1],)
            output.type = None  # Members' annotation (a tuple) is not the member's
            for marker in markers.values():  # the member's own graph has no markers left
                marker.replace_all_uses_with(marker.args[1])
                graph.erase_node(marker)
        else:
            output.args = (tuple(markers[n] for n in names),)
        # Placeholders stay (the signature is the model's); in-place calls stay if torch says so.
        graph.eliminate_dead_code(lambda n: n.op in ("placeholder", "output") or (
            n.op == "call_function" and n.is_impure()))
        if prefix:
            for node in graph.nodes:
                if node.op in ("get_attr", "call_module") and node.target == names[0]:
                    raise EnsembleError(f"member {names[0]!r} is called as one module (a leaf), "
                                        f"so it has no graph of its own: take "
                                        f"{type(model).__name__}.get_submodule({names[0]!r})")
        graphs[mode] = graph
    root: dict[str, Any] = {}
    for graph in graphs.values():
        for node in graph.nodes:
            if node.op in ("get_attr", "call_module"):
                value = fetch_attr(model, node.target)
                if prefix and node.target.startswith(prefix):
                    node.target = node.target[len(prefix):]
                root[node.target] = value
    meta = dict(model.meta)
    versions = meta.get(Meta.VERSIONS, {})
    if prefix:
        # What trace recorded by qualified name follows the member's renaming: module state
        # versions, and the tensors that stay out of the state_dict (non-persistent buffers).
        meta[Meta.VERSIONS] = {k[len(prefix):]: v for k, v in versions.items()
                                  if k.startswith(prefix)}
        if names[0] in versions:
            meta[Meta.VERSIONS][""] = versions[names[0]]
        meta[Meta.CONSTANTS] = [c[len(prefix):] if c.startswith(prefix) else c
                                   for c in meta.get(Meta.CONSTANTS, ())]
    cls = next((n.meta[Meta.MEMBER] for g in graphs_of(model).values()
                for n in _markers(g).values() if n.args[0] == names[0]
                and Meta.MEMBER in n.meta), None) if single else None
    out = build_graph_module(root, graphs, cls or type(model).__name__, meta, model.training)
    if store is not None:
        setattr(out, STORE, store)
    known = {n for n, _ in (*out.named_parameters(remove_duplicate=False),
                            *out.named_buffers(remove_duplicate=False))}
    persistent = set(model.state_dict(keep_vars=True))
    for name, t in (*model.named_parameters(remove_duplicate=False),
                    *model.named_buffers(remove_duplicate=False)):
        # What the graph never reads but the member owns stays with it, as fold keeps it.
        target = name[len(prefix):] if prefix and name.startswith(prefix) else name
        if name.split(".")[0] in names and target not in known:
            assign_attr(out, target, t, persistent=name in persistent)
    return out


def member(model: fx.GraphModule, name: str) -> fx.GraphModule:
    """One member of a shared, folded or traced model of several members, as its own
    GraphModule: only its output is computed, and only what it reads is kept.

    From a folded model (``ssnfx.fold(shared)``) the member's parameters carry its own names
    (``"conv1.weight"``, not ``"0.conv1.weight"``): its state_dict loads strictly into a fresh
    instance of the member's class, and it exports on its own
    (:func:`ssnfx.deploy.export_pt2`). From a
    shared model it keeps the qualified names and reads the ensemble's store (the same
    parameters: training it trains the store of all members); to deploy a member, fold first:
    ``ssnfx.ensemble.member(ssnfx.fold(shared), name)``. The result holds the input's tensors,
    not copies.

    Raises:
        EnsembleError: ``model`` has no members, or none named ``name``.

    Example:
        >>> import torch, ssnfx
        >>> small, large = torch.nn.Linear(8, 2), torch.nn.Sequential(torch.nn.Linear(8, 16),
        ...                                                            torch.nn.Linear(16, 2))
        >>> shared = ssnfx.share({"small": small, "large": large}, budget=0.5)
        >>> alone = ssnfx.ensemble.member(ssnfx.fold(shared), "large")
        >>> _ = large.load_state_dict(alone.state_dict(), strict=True)
        >>> x = torch.randn(3, 8)
        >>> torch.equal(alone(x), shared(x)[1])
        True
    """
    return _extract(model, [name], single=True)


def select_members(model: fx.GraphModule, names: Sequence[str]) -> fx.GraphModule:
    """A shared, folded or traced model of several members cut down to ``names``: its forward
    returns their outputs as a tuple, in the order given, and computes nothing else.

    The parameters keep their qualified names (``"0.conv1.weight"``); the result is itself a model
    of several members (:func:`member` applies to it). It holds the input's tensors, not copies.

    Example:
        >>> import torch, ssnfx
        >>> shared = ssnfx.share([torch.nn.Linear(8, 4) for _ in range(3)], budget=0.5)
        >>> pair = ssnfx.ensemble.select_members(shared, ["2", "0"])
        >>> x = torch.randn(2, 8)
        >>> [torch.equal(a, b) for a, b in zip(pair(x), (shared(x)[2], shared(x)[0]))]
        [True, True]
    """
    if isinstance(names, str):
        raise EnsembleError(f"select_members expects a list of member names, got the string "
                            f"{names!r}; write [{names!r}], or use ssnfx.ensemble.member for "
                            f"one member")
    if not names:
        raise EnsembleError("select_members needs at least one member name")
    return _extract(model, list(names), single=False)
