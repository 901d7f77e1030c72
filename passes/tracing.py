"""trace: find every parameter read of a model as a graph node.

The tracer inlines the standard parametrised layers (Linear, Conv*, ConvTranspose*, Embedding,
Bilinear), so that each of their parameters becomes a ``get_attr`` node, just like a Parameter the
model uses directly (``F.linear(x, self.w)``). Modules that cannot be traced through
(MultiheadAttention, RNN/GRU/LSTM, norms, anything registered with :func:`register_leaf`) stay
``call_module`` nodes; the rewrite gives them generated weights through
``torch.func.functional_call``. Each parameter read becomes a
:class:`~ssnfx.core.plan.Slot`, stored in
``node.meta["ssnfx_slots"]`` of the nodes that read it.
"""
from __future__ import annotations

import copy
import difflib
import inspect
import math
import os
import sys
import traceback
from collections.abc import Iterable
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx._symbolic_trace import _assert_is_none

from ssnfx.core.errors import PlanError, TraceError
from ssnfx.core.graph_module import build_graph_module, fetch_attr, graphs_of, root_hooks
from ssnfx.core.layer_kinds import DEFAULT_KIND, kind_of, traced_through
from ssnfx.core.leaf_call import RootShell, call_root, root_call_graph
from ssnfx.core.markers import ROOT, STORE, Meta, store_of
from ssnfx.core.plan import Slot
from ssnfx.core.registry import Registry

__all__ = ["register_leaf", "SlotTracer", "trace", "slots_of", "graph_slots",
           "as_traced", "check_traced_parameters"]

#: The classes traced as leaves, by qualified name (:func:`register_leaf`).
LEAF_TYPES: Registry[type[nn.Module]] = Registry("leaf module class",
                                                 "ssnfx.passes.register_leaf")
# Frames from these folders are torch's or ssnfx's own, not the model's. Installed package
# directories, not a "/ssnfx/" substring: a user's project may itself live in a folder so named.
_LIBRARY_DIRS = tuple(os.path.join(os.path.dirname(os.path.abspath(f)), "")
                      for f in (torch.__file__, sys.modules[__package__].__file__,
                                sys.modules[__package__.rpartition(".")[0]].__file__))


def register_leaf(cls: type[nn.Module]) -> type[nn.Module]:
    """Trace every module of class ``cls`` as a leaf (usable as a class decorator).

    A leaf is called as a whole, not traced through: use it for modules with data-dependent
    control flow. Its parameters are still shared; they reach it through
    ``torch.func.functional_call``.

    Example:
        >>> import torch, ssnfx
        >>> @ssnfx.passes.register_leaf
        ... class Gate(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.w = torch.nn.Parameter(torch.randn(4, 4))
        ...     def forward(self, x):
        ...         return x @ self.w if x.sum() > 0 else x
        >>> gm = ssnfx.trace(torch.nn.Sequential(Gate()))
        >>> [n.op for n in gm.graph.nodes]
        ['placeholder', 'call_module', 'output']
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_leaf expects an nn.Module subclass, got {cls!r}")
    LEAF_TYPES.register(f"{cls.__module__}.{cls.__qualname__}", cls)
    return cls


class SlotTracer(fx.Tracer):
    """A torch.fx tracer that traces through the layers their kinds inline
    (:attr:`ssnfx.core.layer_kinds.LayerKind.inlined`) and keeps leaves as leaves.

    It also remembers the stack of modules being traced, so that a failure can name the module.
    """

    def __init__(self, leaf_modules: Iterable[str] = ()) -> None:
        super().__init__(autowrap_modules=(math,))
        self.leaf_names = set(leaf_modules)
        self.module_path: list[str] = []

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_names or isinstance(m, tuple(LEAF_TYPES.values())):
            return True
        if traced_through(m):
            return False
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        # Pushed before and popped only on success: after a failure the stack names the culprit.
        self.module_path.append(self.path_of_module(m))
        out = super().call_module(m, forward, args, kwargs)
        self.module_path.pop()
        return out


def _location(exc: BaseException, module: nn.Module) -> str:
    """Where the model's own code failed: the innermost traceback frame outside torch and
    ssnfx, or else (torch.fx failed before running any of it, as on a decorated forward) the
    failing module's ``forward``."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not os.path.abspath(f.filename).startswith(_LIBRARY_DIRS)]
    if frames:
        f = frames[-1]
        return f"{f.filename}:{f.lineno} ({f.line})"
    return _forward_location(module)


def _forward_location(module: nn.Module) -> str:
    try:
        forward = inspect.unwrap(type(module).forward)
        return f"{inspect.getsourcefile(forward)}:{inspect.getsourcelines(forward)[1]} (forward)"
    except (OSError, TypeError):
        return "unknown location"


class _Untraceable(Exception):
    """torch.fx failed inside module ``where`` ("" for the model's own forward)."""

    def __init__(self, where: str, module: nn.Module, reason: str) -> None:
        super().__init__(reason)
        self.where, self.module, self.reason = where, module, reason

    def error(self) -> TraceError:
        cls = type(self.module).__name__
        what = f"module {self.where!r} ({cls})" if self.where else f"the model's forward ({cls})"
        return TraceError(
            f"torch.fx cannot trace {what} at {self.reason}\n"
            f"Remedies: let ssnfx make it a leaf (ShareConfig(auto_leaves=True), the default), "
            f"mark it as one yourself with ssnfx.passes.register_leaf({cls}) or "
            f"leaf_modules=[{self.where!r}] (its parameters are still shared), or pass "
            f"concrete_args to fix the inputs its control flow depends on.")


def trace(model: nn.Module, *, leaf_modules: Iterable[str] = (),
          concrete_args: dict[str, Any] | None = None,
          auto_leaves: bool = True) -> fx.GraphModule:
    """Trace ``model`` into a GraphModule whose parameter reads are annotated with slots.

    Where torch.fx cannot trace a module, that module becomes a leaf and tracing goes on: the
    innermost failing module first, then its parents as needed, up to the model itself, whose
    graph is then one call of its own forward (a Hugging Face model, say). Leaves still share
    their parameters: they get them through ``torch.func.functional_call``. A model whose
    forward takes an optional input (default ``None``) that its traced code uses is a leaf too:
    the trace would have taken the input as always given. ``gm.meta["ssnfx_trace"]`` records
    the automatic leaves and why, for the report and for :func:`ssnfx.load`.

    Args:
        model: any ``nn.Module``, or a GraphModule from ``torch.fx.symbolic_trace`` or another fx
            tracer, whose graph is used as it is; the model is not modified.
        leaf_modules: qualified names of submodules to keep as leaves (``""``: the model itself).
        concrete_args: values fixed at trace time (forwarded to ``torch.fx.Tracer.trace``), e.g.
            to specialise away control flow that depends on a flag argument.
        auto_leaves: make untraceable modules leaves; ``False`` raises the TraceError instead.

    Returns:
        A GraphModule over the model's own modules and parameters. ``node.meta["ssnfx_slots"]``
        lists the :class:`~ssnfx.core.plan.Slot` objects each node reads; :func:`slots_of` lists
        them
        all in graph order. ``gm.meta["ssnfx_unread"]`` holds the parameters and buffers the
        graph never reads, so later passes can keep them.

    Raises:
        TraceError: with ``auto_leaves=False``, naming the module and source line that could not
            be traced, with remedies.

    Example:
        >>> import torch, torchvision, ssnfx
        >>> gm = ssnfx.trace(torchvision.models.resnet18())
        >>> [s.name for s in ssnfx.passes.slots_of(gm)][:3]
        ['conv1.weight', 'bn1.weight', 'bn1.bias']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"ssnfx.trace expects an nn.Module, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        # A scripted model's forward is TorchScript, which torch.fx cannot trace.
        name = getattr(model, "original_name", type(model).__name__)
        raise TraceError(f"{name} is a TorchScript module (torch.jit.script or "
                         f"torch.jit.trace): share the Python model, then script after "
                         f"folding, not before (ssnfx.export(ssnfx.fold(shared), ...))")
    if store_of(model) is not None:
        # Tracing would reach into the generators and fail, or find nothing left to share.
        raise TraceError(f"{type(model).__name__} is shared already (its parameter store "
                         f"{STORE!r} holds a plan): train it as it is, or ssnfx.fold it and "
                         f"share the folded model")
    if isinstance(leaf_modules, str):  # tuple("attn") would be four one-letter names
        raise TraceError(f"leaf_modules must be a list of module names, got the string "
                         f"{leaf_modules!r}; write leaf_modules=[{leaf_modules!r}]")
    leaf_modules = tuple(leaf_modules)
    # Every name of a module counts, also a second name of a module registered twice; torch.fx
    # knows each module by its first name, so the leaves are given to the tracer by that name.
    known = dict(model.named_modules(remove_duplicate=False))
    first = {id(m): n for n, m in model.named_modules()}
    for name in leaf_modules:
        if name not in known:
            close = difflib.get_close_matches(str(name), [n for n in known if n], n=3)
            hint = f"did you mean {close}?" if close else "see model.named_modules()"
            raise TraceError(f"leaf_modules names {name!r}, which is not a submodule of "
                             f"{type(model).__name__}: give qualified names as in "
                             f"model.named_modules() ({hint})")
    # Order kept, repeats dropped: naming a module twice is harmless.
    leaf_modules = tuple(dict.fromkeys(leaf_modules))
    tracer_leaves = tuple(dict.fromkeys(first[id(known[n])] for n in leaf_modules))
    mode = model.training
    auto: dict[str, str] = {}
    graphs: dict[bool | None, fx.Graph] = {}
    if isinstance(model, fx.GraphModule):  # traced already, by torch.fx or another fx tracer
        graphs = {k: copy.deepcopy(g) for k, g in graphs_of(model).items()}
    elif "" not in tracer_leaves and not isinstance(model, tuple(LEAF_TYPES.values())):
        graphs, auto = _trace_modes(model, tracer_leaves, concrete_args, auto_leaves)
    root: nn.Module | dict[str, Any] = model
    if not graphs:  # the model itself is a leaf
        graphs = {None: root_call_graph(model, concrete_args)}
        root = {**dict(model.named_children()), **dict(model.named_parameters(recurse=False)),
                **dict(model.named_buffers(recurse=False)), ROOT: RootShell(model)}
    elif None not in graphs and \
            graphs[True].python_code("self").src == graphs[False].python_code("self").src:
        graphs = {None: graphs[mode]}
    # Tensors torch.fx stored as attributes (_tensor_constant0, non-persistent buffers) stay out
    # of the state_dict, so that it keeps the model's own keys; so do the model's own
    # non-persistent buffers, read or not.
    state = set(model.state_dict(keep_vars=True))
    constants = {n.target for g in graphs.values() for n in g.nodes
                 if n.op == "get_attr" and n.target != ROOT and n.target not in state
                 and type(fetch_attr(model, n.target)) is torch.Tensor}
    constants.update(n for n, _ in model.named_buffers(remove_duplicate=False) if n not in state)
    meta = {Meta.CONSTANTS: sorted(constants),
            Meta.VERSIONS: {n: m._version for n, m in model.named_modules()
                            if getattr(m, "_version", 1) != 1},
            Meta.TRACE: {"leaf_modules": list(leaf_modules), "auto_leaves": auto,
                         "concrete_args": dict(concrete_args or {})}}
    if root is model:  # (a model that is one leaf call runs its own hooks, in that call)
        meta[Meta.ROOT_HOOKS] = root_hooks(model)
    gm = build_graph_module(root, graphs, type(model).__name__, meta, mode)
    _annotate_slots(gm, model)
    return gm


def _trace_modes(model: nn.Module, leaves: tuple[str, ...], concrete_args: dict[str, Any] | None,
                 auto_leaves: bool) -> tuple[dict[bool | None, fx.Graph], dict[str, str]]:
    """Trace ``model`` in both modes, making each module torch.fx fails in a leaf until both
    traces succeed; returns the graphs and the automatic leaves with their reasons."""
    auto: dict[str, str] = {}
    mode = model.training
    try:
        while True:
            try:
                # Both modes: code that branches on self.training (auxiliary heads, stochastic
                # depth) gives two graphs, kept apart so that train() and eval() behave as in
                # the model.
                graphs: dict[bool | None, fx.Graph] = {}
                for training in (mode, not mode):
                    model.train(training)
                    graphs[training] = _trace_one(model, (*leaves, *auto), concrete_args)
                    if auto_leaves:
                        _check_optional_inputs(model, graphs[training])
                return graphs, auto
            except _Untraceable as e:
                if not auto_leaves or e.where in auto:
                    raise e.error() from e.__cause__
                if e.where == "":  # the model itself: what was found below no longer matters
                    return {}, {"": e.reason}
                auto[e.where] = e.reason
    finally:
        model.train(mode)


def _trace_one(model: nn.Module, leaves: tuple[str, ...],
               concrete_args: dict[str, Any] | None) -> fx.Graph:
    tracer = SlotTracer(leaves)
    try:
        return tracer.trace(model, concrete_args=concrete_args)
    except Exception as e:  # torch.fx raises many types; all become one clear error
        where = tracer.module_path[-1] if tracer.module_path else ""
        module = model.get_submodule(where)
        detail = str(e).strip().splitlines()
        reason = f"{_location(e, module)}: {type(e).__name__}: {detail[0] if detail else ''}"
        raise _Untraceable(where, module, reason) from None
    finally:
        # The tracer and its proxies reference each other, and the tracer the model: cut it
        # loose, so that the model is freed when its user lets go, not at the next collection.
        tracer.__dict__.clear()


def _check_optional_inputs(model: nn.Module, graph: fx.Graph) -> None:
    """A placeholder whose default is None but which the traced code uses means the trace took
    ``if x is not None`` as true: a call without it would fail. The model must be a leaf."""
    used = [n.target for n in graph.nodes
            if n.op == "placeholder" and n.args and n.args[0] is None
            and any(u.target is not _assert_is_none for u in n.users)]  # not concrete_args' guard
    if used:
        raise _Untraceable("", model, f"{_forward_location(model)}: optional input(s) {used} "
                                      f"(default None) are used by the traced code, which would "
                                      f"take them as always given")


def _annotate_slots(gm: fx.GraphModule, model: nn.Module) -> None:
    """Write a Slot for every parameter read into ``node.meta["ssnfx_slots"]``."""
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    modules = dict(model.named_modules(remove_duplicate=False))
    seen: dict[int, Slot] = {}
    objects: dict[int, nn.Parameter] = {}

    def slot_for(p: nn.Parameter, name: str, position: int, leaf: bool, kind: str) -> Slot:
        if id(p) not in seen:
            objects[id(p)] = p
            all_names = names.get(id(p), [name])
            seen[id(p)] = Slot(name=name, shape=tuple(p.shape), role=name.rpartition(".")[2],
                               kind=kind, position=position, leaf=leaf,
                               aliases=tuple(n for n in all_names if n != name))
        return seen[id(p)]

    def leaf_slots(node: fx.Node, prefix: str, mod: nn.Module, position: int) -> None:
        # Every name of a tied parameter under the leaf gets the weight, mapped to its one slot.
        local: dict[str, str] = {}
        found: dict[str, Slot] = {}
        # A torch.nn leaf (MultiheadAttention, LSTM) initialises its parameters itself: its
        # kind is theirs. Below any other leaf, a parameter's kind is its own layer's.
        builtin = type(mod).__module__.startswith("torch.nn.")
        for n, p in mod.named_parameters(remove_duplicate=False):
            owner = mod if builtin else mod.get_submodule(n.rpartition(".")[0])
            slot = slot_for(p, prefix + n, position, True, type(owner).__name__)
            local[n], found[slot.name] = slot.name, slot
        if local:
            node.meta[Meta.LEAF_PARAMS] = local
            node.meta[Meta.SLOTS] = list(found.values())

    for graph in graphs_of(gm).values():
        for position, node in enumerate(graph.nodes):
            if node.op == "get_attr" and node.target != ROOT:
                obj = fetch_attr(model, node.target)
                if isinstance(obj, nn.Parameter):
                    owner = modules.get(node.target.rpartition(".")[0])
                    # A registered layer's (subclasses too); else the model's own Parameter.
                    kind = "Parameter" if owner is None or kind_of(owner) is DEFAULT_KIND \
                        else type(owner).__name__
                    node.meta[Meta.SLOTS] = [slot_for(obj, node.target, position, False, kind)]
            elif node.op == "call_module":
                leaf_slots(node, f"{node.target}.", gm.get_submodule(node.target), position)
            elif node.op == "call_function" and node.target is call_root:
                # The root's own parameters are get_attr nodes of the graph; the rest is below.
                children = nn.Module()
                children._modules = dict(model.named_children())
                leaf_slots(node, "", children, position)
    read = set(seen)
    # The Parameter objects the slots describe: make_plan and rewrite check that the model still
    # holds them, since a parameter assigned after tracing would not match its slot.
    gm.meta[Meta.PARAMS] = {seen[i].name: p for i, p in objects.items()}
    gm.meta[Meta.UNREAD] = {
        n: t for n, t in (*model.named_parameters(remove_duplicate=False),
                          *model.named_buffers(remove_duplicate=False))
        if id(t) not in read and not _graph_reads(gm, n)}


def as_traced(gm: fx.GraphModule) -> fx.GraphModule:
    """``gm`` if :func:`trace` made it, else ``trace(gm)``: a GraphModule from torch.fx (or
    another fx tracer) gets its slots without being traced again. A shared model is returned as
    it is, for the pass to say that it is shared already."""
    if store_of(gm) is not None or Meta.PARAMS in getattr(gm, "meta", {}):
        return gm
    return trace(gm)


def check_traced_parameters(gm: fx.GraphModule) -> None:
    """Raise PlanError if a slot's parameter was replaced or deleted since :func:`trace`.

    The slots (shapes, ties, which node reads what) describe the Parameter objects the model held
    when it was traced; a plan or rewrite built from them after ``gm.fc.weight = nn.Parameter(...)``
    would use stale shapes or untie weights silently.
    """
    traced = gm.meta.get(Meta.PARAMS)
    if traced is None:
        return  # a GraphModule ssnfx did not trace: rewrite's slot check is all there is
    for name, p in traced.items():
        try:
            now = fetch_attr(gm, name)
        except AttributeError:
            now = None
        if now is not p:
            what = "deleted" if now is None else (
                f"replaced (traced with shape {tuple(p.shape)}, now "
                f"{type(now).__name__} of shape {tuple(getattr(now, 'shape', ()))})")
            raise PlanError(f"parameter {name!r} of {type(gm).__name__} was {what} after "
                            f"ssnfx.trace, so the traced slots no longer describe it; change the "
                            f"parameters first, then trace the model again (ssnfx.trace(model))")


def _graph_reads(gm: fx.GraphModule, name: str) -> bool:
    """True if ``name`` is reachable from the GraphModule (kept by its own copy of the model)."""
    try:
        gm.get_parameter(name)
        return True
    except AttributeError:
        pass
    try:
        gm.get_buffer(name)
        return True
    except AttributeError:
        return False


def graph_slots(gm: fx.GraphModule) -> dict[str, Slot]:
    """All slots of a traced GraphModule by name, in graph order."""
    out: dict[str, Slot] = {}
    for graph in graphs_of(gm).values():
        for node in graph.nodes:
            for s in node.meta.get(Meta.SLOTS, ()):
                out.setdefault(s.name, s)
    return dict(sorted(out.items(), key=lambda kv: kv[1].position))


def slots_of(gm: fx.GraphModule) -> list[Slot]:
    """The slots of a traced GraphModule in graph order (a tied parameter is listed once).

    Example:
        >>> import torch, ssnfx
        >>> gm = ssnfx.trace(torch.nn.Linear(3, 2))
        >>> [(s.name, s.shape, s.kind) for s in ssnfx.passes.slots_of(gm)]
        [('weight', (2, 3), 'Linear'), ('bias', (2,), 'Linear')]
    """
    return list(graph_slots(gm).values())
