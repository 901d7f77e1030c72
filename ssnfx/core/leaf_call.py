"""Calling what torch.fx does not trace through, with some of its weights supplied from outside.

A *leaf* is a module the graph calls as a whole (an RNN, MultiheadAttention, a module the user
or the automatic leaf search marked); its shared parameters reach it through
``torch.func.functional_call``. A *root leaf* is a model whose own ``forward`` cannot be traced
(a Hugging Face model, say): its graph is one call of the model's forward, over the shared
model's own submodules and tensors, so that parameter names stay the model's own.
"""
from __future__ import annotations

import copy
import inspect
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch.func import functional_call

from ssnfx.core.layer_kinds import kind_of
from ssnfx.core.markers import ROOT

__all__ = ["call_leaf", "call_root", "RootShell", "root_call_graph"]


def call_leaf(module: nn.Module, names: tuple[str, ...], weights: tuple[torch.Tensor, ...],
              *args: Any, **kwargs: Any) -> Any:
    """Call a leaf module with some of its parameters supplied (generated) from outside.

    ``names`` may hold several names of one tied parameter, each given the same weight.
    """
    if not names:  # a folded root call: plain weights, and torch.jit.trace refuses stateless
        return module(*args, **kwargs)
    try:
        return functional_call(module, dict(zip(names, weights)), args, kwargs, strict=False)
    finally:
        # RNNs cache their weights in a list, which functional_call leaves pointing at the
        # generated tensors: that keeps the step's autograd graph alive and makes deepcopy (and
        # fold, which copies) fail on non-leaf tensors.
        kind_of(module).after_weights_change(module)


class RootShell:
    """The model's own object stripped of its submodules, parameters and buffers.

    Deliberately not an ``nn.Module``: as an attribute of the shared GraphModule it must not
    register the model's modules a second time. Its class and non-tensor attributes (a Hugging
    Face ``config``, say) make the model's ``forward`` run; :func:`call_root` binds the
    GraphModule's own submodules and tensors to it for each call, so ``.to()``, ``deepcopy`` and
    ``load_state_dict`` of the GraphModule act on what the forward uses.
    """

    def __init__(self, model: nn.Module) -> None:
        shell = copy.copy(model)  # shallow: the model itself is left as it is
        shell.__dict__.update(_parameters={}, _buffers={}, _modules={},
                              _non_persistent_buffers_set=set())
        self.module = shell

    def __repr__(self) -> str:
        return f"RootShell({type(self.module).__name__})"


def call_root(root: RootShell, modules: dict[str, nn.Module], tensors: dict[str, torch.Tensor],
              names: tuple[str, ...], weights: tuple[torch.Tensor, ...],
              args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run the model's own forward over ``modules`` and ``tensors`` (its direct children and
    direct parameters and buffers, possibly generated), with ``weights`` supplied under
    ``names`` anywhere below it."""
    shell = root.module
    shell.__dict__["_modules"] = dict(modules)
    shell.__dict__["_parameters"] = {n: t for n, t in tensors.items()
                                     if isinstance(t, nn.Parameter)}
    shell.__dict__["_buffers"] = {n: t for n, t in tensors.items()
                                  if not isinstance(t, nn.Parameter)}
    try:
        return call_leaf(shell, names, weights, *args, **kwargs)
    finally:
        # Nothing of this step (generated weights, the submodules) stays reachable from the shell.
        shell.__dict__.update(_parameters={}, _buffers={}, _modules={})


def root_call_graph(model: nn.Module, concrete_args: dict[str, Any] | None = None) -> fx.Graph:
    """A graph that calls ``model``'s forward as one :func:`call_root` node.

    Its placeholders follow the forward's signature (``inspect.signature`` sees through the
    decorators that defeat torch.fx), defaults included, so the graph takes the same positional
    and keyword arguments as the model. ``concrete_args`` are passed as constants.
    """
    concrete_args = concrete_args or {}
    graph = fx.Graph()
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    varargs = varkw = None
    for p in inspect.signature(model.forward).parameters.values():
        if p.name in concrete_args:
            kwargs[p.name] = concrete_args[p.name]
        elif p.kind is p.VAR_POSITIONAL:
            varargs = graph.placeholder(f"*{p.name}")
        elif p.kind is p.VAR_KEYWORD:
            varkw = graph.placeholder(f"**{p.name}")
        else:
            default = () if p.default is p.empty else (p.default,)
            node = graph.placeholder(p.name, default_value=default[0] if default else
                                     inspect.Signature.empty)
            if p.kind is p.POSITIONAL_ONLY:
                args.append(node)
            else:
                kwargs[p.name] = node
    modules = {n: graph.get_attr(n) for n, _ in model.named_children()}
    tensors = {n: graph.get_attr(n) for n, _ in (*model.named_parameters(recurse=False),
                                                *model.named_buffers(recurse=False))}
    all_args: Any = tuple(args)
    if varargs is not None:
        all_args = graph.call_function(_concat, (all_args, varargs))
    all_kwargs: Any = kwargs
    if varkw is not None:
        all_kwargs = graph.call_function(_merge, (kwargs, varkw))
    out = graph.call_function(call_root, (graph.get_attr(ROOT), modules, tensors, (), (),
                                          all_args, all_kwargs))
    graph.output(out)
    return graph


def _concat(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
    return (*a, *b)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {**a, **b}
