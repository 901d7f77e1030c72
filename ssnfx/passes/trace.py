"""trace: find every parameter read of a model as a graph node.

The tracer inlines the standard parametrised layers (Linear, Conv*, ConvTranspose*, Embedding,
Bilinear), so that each of their parameters becomes a ``get_attr`` node, just like a Parameter the
model uses directly (``F.linear(x, self.w)``). Modules that cannot be traced through
(MultiheadAttention, RNN/GRU/LSTM, norms, anything registered with :func:`register_leaf`) stay
``call_module`` nodes; the rewrite gives them generated weights through
``torch.func.functional_call``. Each parameter read becomes a :class:`~ssnfx.plan.Slot`, stored in
``node.meta["ssnfx_slots"]`` of the nodes that read it.
"""
from __future__ import annotations

import difflib
import math
import os
import sys
import traceback
from collections.abc import Iterable
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import PlanError, TraceError
from ..graph_module import build_graph_module, fetch_attr, graphs_of
from ..plan import Slot

__all__ = ["INLINED_LAYERS", "register_leaf", "SlotTracer", "trace", "slots_of", "graph_slots",
           "check_traced_parameters"]

#: Layers whose forward is traced through, so that their parameters become get_attr nodes.
INLINED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Bilinear, nn.Embedding,
    nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)

_LEAF_TYPES: set[type[nn.Module]] = set()
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
        >>> @ssnfx.register_leaf
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
    _LEAF_TYPES.add(cls)
    return cls


class SlotTracer(fx.Tracer):
    """A torch.fx tracer that traces through :data:`INLINED_LAYERS` and keeps leaves as leaves.

    It also remembers the stack of modules being traced, so that a failure can name the module.
    """

    def __init__(self, leaf_modules: Iterable[str] = ()) -> None:
        super().__init__(autowrap_modules=(math,))
        self.leaf_names = set(leaf_modules)
        self.module_path: list[str] = []

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_names or isinstance(m, tuple(_LEAF_TYPES)):
            return True
        if type(m) in INLINED_LAYERS:
            return False
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        # Pushed before and popped only on success: after a failure the stack names the culprit.
        self.module_path.append(self.path_of_module(m))
        out = super().call_module(m, forward, args, kwargs)
        self.module_path.pop()
        return out


def _user_frame(exc: BaseException) -> str:
    """The innermost traceback frame outside torch: where the model's own code failed."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not os.path.abspath(f.filename).startswith(_LIBRARY_DIRS)]
    if not frames:
        return "unknown location"
    f = frames[-1]
    return f"{f.filename}:{f.lineno} ({f.line})"


def trace(model: nn.Module, *, leaf_modules: Iterable[str] = (),
          concrete_args: dict[str, Any] | None = None) -> fx.GraphModule:
    """Trace ``model`` into a GraphModule whose parameter reads are annotated with slots.

    Args:
        model: any ``nn.Module``; it is not modified.
        leaf_modules: qualified names of submodules to keep as leaves.
        concrete_args: values fixed at trace time (forwarded to ``torch.fx.Tracer.trace``), e.g.
            to specialise away control flow that depends on a flag argument.

    Returns:
        A GraphModule over the model's own modules and parameters. ``node.meta["ssnfx_slots"]``
        lists the :class:`~ssnfx.plan.Slot` objects each node reads; :func:`slots_of` lists them
        all in graph order. ``gm.meta["ssnfx_unread"]`` holds the parameters and buffers the
        graph never reads, so later passes can keep them.

    Raises:
        TraceError: naming the module and source line that could not be traced, with remedies.

    Example:
        >>> import torch, torchvision, ssnfx
        >>> gm = ssnfx.trace(torchvision.models.resnet18())
        >>> [s.name for s in ssnfx.slots_of(gm)][:3]
        ['conv1.weight', 'bn1.weight', 'bn1.bias']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"ssnfx.trace expects an nn.Module, got {type(model).__name__}")
    from .rewrite import STORE  # here, not at the top: rewrite imports this module

    if hasattr(getattr(model, STORE, None), "plan"):
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
    graphs: dict[bool | None, fx.Graph] = {}
    mode = model.training
    try:
        # Trace in both modes: code that branches on self.training (auxiliary heads, stochastic
        # depth) gives two graphs, kept apart so that train() and eval() behave as in the model.
        for training in (mode, not mode):
            model.train(training)
            graphs[training] = _trace_one(model, tracer_leaves, concrete_args, known)
    finally:
        model.train(mode)
    if graphs[True].python_code("self").src == graphs[False].python_code("self").src:
        graphs = {None: graphs[mode]}
    # Tensors torch.fx stored as attributes (_tensor_constant0, non-persistent buffers) stay out
    # of the state_dict, so that it keeps the model's own keys.
    state = set(model.state_dict(keep_vars=True))
    constants = sorted({n.target for g in graphs.values() for n in g.nodes
                        if n.op == "get_attr" and n.target not in state
                        and type(fetch_attr(model, n.target)) is torch.Tensor})
    meta = {"ssnfx_constants": constants,
            "ssnfx_versions": {n: m._version for n, m in model.named_modules()
                               if getattr(m, "_version", 1) != 1},
            "ssnfx_trace": {"leaf_modules": list(leaf_modules)}}
    gm = build_graph_module(model, graphs, type(model).__name__, meta, mode)
    _annotate_slots(gm, model)
    return gm


def _trace_one(model: nn.Module, leaf_modules: tuple[str, ...],
               concrete_args: dict[str, Any] | None, known: dict[str, nn.Module]) -> fx.Graph:
    tracer = SlotTracer(leaf_modules)
    try:
        return tracer.trace(model, concrete_args=concrete_args)
    except Exception as e:  # torch.fx raises many types; all become one clear error
        where = tracer.module_path[-1] if tracer.module_path else ""
        cls = type(known.get(where, model)).__name__
        module = f"module {where!r} ({cls})" if where else f"the model's forward ({cls})"
        raise TraceError(
            f"torch.fx cannot trace {module} at {_user_frame(e)}: {type(e).__name__}: {e}\n"
            f"Remedies: mark it as a leaf, with ssnfx.register_leaf({cls}) or "
            f"leaf_modules=[{where!r}] (its parameters are still shared), or pass concrete_args "
            f"to fix the inputs its control flow depends on.") from e


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

    for graph in graphs_of(gm).values():
        for position, node in enumerate(graph.nodes):
            if node.op == "get_attr":
                obj = fetch_attr(model, node.target)
                if isinstance(obj, nn.Parameter):
                    owner = modules.get(node.target.rpartition(".")[0])
                    kind = type(owner).__name__ if isinstance(owner, INLINED_LAYERS) \
                        else "Parameter"
                    node.meta["ssnfx_slots"] = [slot_for(obj, node.target, position, False, kind)]
            elif node.op == "call_module":
                mod = gm.get_submodule(node.target)
                found = [slot_for(p, f"{node.target}.{n}", position, True, type(mod).__name__)
                         for n, p in mod.named_parameters(remove_duplicate=False)]
                if found:
                    node.meta["ssnfx_slots"] = found
    read = set(seen)
    # The Parameter objects the slots describe: make_plan and rewrite check that the model still
    # holds them, since a parameter assigned after tracing would not match its slot.
    gm.meta["ssnfx_params"] = {seen[i].name: p for i, p in objects.items()}
    gm.meta["ssnfx_unread"] = {
        n: t for n, t in (*model.named_parameters(remove_duplicate=False),
                          *model.named_buffers(remove_duplicate=False))
        if id(t) not in read and not _graph_reads(gm, n)}


def check_traced_parameters(gm: fx.GraphModule) -> None:
    """Raise PlanError if a slot's parameter was replaced or deleted since :func:`trace`.

    The slots (shapes, ties, which node reads what) describe the Parameter objects the model held
    when it was traced; a plan or rewrite built from them after ``gm.fc.weight = nn.Parameter(...)``
    would use stale shapes or untie weights silently.
    """
    traced = gm.meta.get("ssnfx_params")
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
            for s in node.meta.get("ssnfx_slots", ()):
                out.setdefault(s.name, s)
    return dict(sorted(out.items(), key=lambda kv: kv[1].position))


def slots_of(gm: fx.GraphModule) -> list[Slot]:
    """The slots of a traced GraphModule in graph order (a tied parameter is listed once).

    Example:
        >>> import torch, ssnfx
        >>> gm = ssnfx.trace(torch.nn.Linear(3, 2))
        >>> [(s.name, s.shape, s.kind) for s in ssnfx.slots_of(gm)]
        [('weight', (2, 3), 'Linear'), ('bias', (2,), 'Linear')]
    """
    return list(graph_slots(gm).values())
