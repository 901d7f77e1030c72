"""GraphModule plumbing shared by the passes: attribute paths, and one graph per mode.

A model whose forward branches on ``self.training`` (Inception's auxiliary head, stochastic depth
in EfficientNet) traces to a different graph in train and in eval mode. :class:`ModeGraphModule`
keeps both and switches with ``.train()`` / ``.eval()``, as the model itself would.
"""
from __future__ import annotations

import copy
import gc
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ssnfx.core.errors import CheckpointError
from ssnfx.core.markers import STORE, Meta

__all__ = ["GraphModule", "ModeGraphModule", "graphs_of", "build_graph_module", "assign_attr",
           "fetch_attr", "copy_value", "root_hooks", "release"]


def fetch_attr(root: nn.Module, target: str) -> Any:
    """``root.<target>`` for a dotted ``target``."""
    obj: Any = root
    for atom in target.split("."):
        obj = getattr(obj, atom)
    return obj


def assign_attr(root: nn.Module, target: str, value: Any, persistent: bool = True) -> None:
    """Set ``root.<target>`` to ``value``, creating empty parent modules as needed."""
    *path, leaf = target.split(".")
    mod = root
    for atom in path:
        if not hasattr(mod, atom):
            mod.add_module(atom, nn.Module())
        mod = getattr(mod, atom)
    if isinstance(value, nn.Parameter):
        mod.register_parameter(leaf, value)
    elif isinstance(value, nn.Module):
        mod.add_module(leaf, value)
    elif isinstance(value, torch.Tensor):
        mod.register_buffer(leaf, value, persistent=persistent)
    else:
        setattr(mod, leaf, value)


def copy_value(obj: Any, memo: dict[int, Any]) -> Any:
    """An independent copy of a module, parameter or tensor; ``memo`` keeps tied ones tied."""
    if not isinstance(obj, torch.Tensor):
        return copy.deepcopy(obj, memo)
    if id(obj) not in memo:
        c = obj.detach().clone()
        memo[id(obj)] = nn.Parameter(c, requires_grad=obj.requires_grad) \
            if isinstance(obj, nn.Parameter) else c
    return memo[id(obj)]


class GraphModule(fx.GraphModule):
    """The GraphModule every pass builds: torch.fx's, except that a shared one refuses to be
    pickled whole (``torch.save(shared)``) with an error that says what to do instead.

    Pickling a GraphModule stores its code and re-traces it when loaded: the calls ssnfx puts
    in a shared graph (leaf calls, just-in-time generation) would be traced into, and ssnfx
    promises that nothing it writes needs unpickling. A folded or traced model pickles as
    torch.fx's does.
    """

    def __reduce__(self) -> Any:
        if STORE in self._modules and hasattr(self._modules[STORE], "plan"):
            raise CheckpointError(
                f"torch.save of the whole shared {type(self).__name__} would pickle its code "
                f"and objects, which ssnfx does not support: save it with ssnfx.save(shared, "
                f"path) and read it back with ssnfx.load(model, path) (tensors and the plan, "
                f"nothing unpickled), or torch.save(shared.state_dict()); a folded model "
                f"(ssnfx.fold) pickles as any GraphModule")
        return super().__reduce__()

    def __deepcopy__(self, memo: dict[int, Any]) -> "GraphModule":
        # torch.fx's deepcopy makes a fresh module, without the hooks its __call__ runs.
        res = super().__deepcopy__(memo)
        for name, table in root_hooks(self).items():
            if isinstance(table, dict):
                getattr(res, name).update(copy.deepcopy(table, memo))
            else:
                setattr(res, name, table)
        return res


class ModeGraphModule(GraphModule):
    """A GraphModule with a train graph and an eval graph; ``.train(mode)`` picks one."""

    def __init__(self, root: nn.Module | dict[str, Any], train_graph: fx.Graph,
                 eval_graph: fx.Graph, class_name: str = "GraphModule") -> None:
        super().__init__(root, train_graph, class_name)
        for node in eval_graph.nodes:  # what only the eval graph reads
            if node.op in ("get_attr", "call_module"):
                try:
                    fetch_attr(self, node.target)
                except AttributeError:
                    value = root[node.target] if isinstance(root, dict) \
                        else fetch_attr(root, node.target)
                    assign_attr(self, node.target, value)
        self.train_graph = train_graph
        self.eval_graph = eval_graph
        self.training = True

    def train(self, mode: bool = True) -> "ModeGraphModule":
        graph = self.train_graph if mode else self.eval_graph
        if self.graph is not graph:
            self.graph = graph  # the setter recompiles forward
        return super().train(mode)

    def _deepcopy_init(self) -> Callable[..., None]:
        def init(res: "ModeGraphModule", fake: nn.Module, graph: fx.Graph) -> None:
            fx.GraphModule.__init__(res, fake, graph)
            res.train_graph = fake.__dict__["train_graph"]
            res.eval_graph = fake.__dict__["eval_graph"]
        return init


def graphs_of(gm: fx.GraphModule) -> dict[bool | None, fx.Graph]:
    """``{True: train graph, False: eval graph}`` of a ModeGraphModule, else ``{None: graph}``."""
    if isinstance(gm, ModeGraphModule):
        return {True: gm.train_graph, False: gm.eval_graph}
    return {None: gm.graph}


def build_graph_module(root: nn.Module | dict[str, Any], graphs: dict[bool | None, fx.Graph],
                       class_name: str, meta: dict[str, Any], training: bool) -> fx.GraphModule:
    """A GraphModule (or ModeGraphModule) over ``root`` (a module or a dict of targets), with
    the model's constants kept out of its state_dict and its modules' state_dict versions
    restored, as recorded by trace."""
    if None in graphs:
        gm = GraphModule(root, graphs[None], class_name=class_name)
    else:
        gm = ModeGraphModule(root, graphs[True], graphs[False], class_name=class_name)
    for graph in graphs.values():
        graph.lint()
    for name in meta.get(Meta.CONSTANTS, ()):
        try:
            value = fetch_attr(gm, name)
        except AttributeError:
            continue
        assign_attr(gm, name, value, persistent=False)
    for path, version in meta.get(Meta.VERSIONS, {}).items():
        try:
            gm.get_submodule(path)._version = version
        except AttributeError:
            pass
    for name, table in meta.get(Meta.ROOT_HOOKS, {}).items():
        if isinstance(table, dict):
            getattr(gm, name).update(table)
        else:  # the flag of the backward hooks
            setattr(gm, name, table)
    gm.meta.update(meta)
    gm.train(training)
    return gm


#: The hook tables of an nn.Module that its ``__call__`` runs (with their flags).
_HOOK_TABLES = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
                "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                "_backward_pre_hooks", "_backward_hooks")


def root_hooks(model: nn.Module) -> dict[str, Any]:
    """The hooks registered on ``model`` itself (not its submodules, whose modules the graph
    keeps), by table: what :func:`build_graph_module` installs from ``meta``."""
    hooks: dict[str, Any] = {name: dict(getattr(model, name)) for name in _HOOK_TABLES
                             if getattr(model, name, None)}
    if hooks.get("_backward_hooks"):
        hooks["_is_full_backward_hook"] = model._is_full_backward_hook
    return hooks


def release(gm: fx.GraphModule) -> None:
    """Empty an intermediate GraphModule (a trace that a pass has consumed).

    A GraphModule and its graph reference each other, so it is freed only when Python's cycle
    collector runs, and until then it keeps every module and parameter of the model it was
    traced from alive: the whole original model during the first steps of training.
    """
    gm.__dict__.update(_modules={}, _parameters={}, _buffers={})
    gm.meta.clear()
    if any(n.meta.get("is_wrapped") for g in graphs_of(gm).values() for n in g.nodes):
        # The code of a graph that calls torch.fx.wrap'ed functions (torchvision's Swin, say)
        # runs torch.fx.wrap when compiled, which keeps its own frame, and with it every frame
        # that built the GraphModule and their locals (the original model), in a cycle. Only
        # the cycle collector frees those; run it now rather than some training steps later.
        gc.collect()
