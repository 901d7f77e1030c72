"""Many models from one parameter store: ensembles of different widths, depths and families
(SWN Sec. 4: Teterwak et al., "Learning to Compose SuperWeights for Neural Parameter Allocation
Search").

``ssnfx.share([m1, m2, m3], budget)`` wraps the models in :class:`Members`, a container whose
forward returns every member's output for the same input, and runs the usual pipeline on it. The
slots are the members' parameters under qualified names (``"0.conv1.weight"``), one store serves
all members, a float budget is a fraction of the members' *total* parameters, and the search
clusters slots across members.

Each member's output passes through :func:`member_output`, an identity that torch.fx records as a
node naming the member. The graph itself thus says which output is whose, through rewrite, fold,
checkpoints (which re-trace) and export, and the functions below need nothing else:

* :func:`member` extracts one member as its own GraphModule (dead-code elimination). From a
  folded model its parameters carry the member's own names, so that its state_dict loads strictly
  into a fresh instance of the member's class and it exports on its own.
* :func:`select_members` keeps a subset of the members, :func:`ensemble` averages their softmax
  probabilities (:func:`average_probabilities`).
* :func:`ensemble_loss` sums a per-member loss over the members' outputs, for training and search.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from .errors import EnsembleError
from .graph_module import assign_attr, build_graph_module, fetch_attr, graphs_of
from .markers import STORE, Meta, store_of

__all__ = ["Members", "member_output", "member_names", "member", "select_members",
           "ensemble_loss", "EnsembleLoss", "average_probabilities", "EnsembleAverage",
           "ensemble", "as_members"]


def member_output(name: str, value: Any) -> Any:
    """Identity: marks ``value`` as the output of member ``name`` in a traced graph.

    torch.fx records each call as a node (``ssnfx.ensemble.member_output('0', fc)``), which
    :func:`member` and :func:`select_members` find; it costs nothing at run time.

    Example:
        >>> member_output("small", 3)
        3
    """
    return value


fx.wrap("member_output")


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "." in name or name == STORE:
        raise EnsembleError(f"member names must be non-empty strings without '.', other than "
                            f"{STORE!r} (the name of the parameter store); got {name!r}: pass a "
                            f"list, or a dict with such keys")
    return name


class Members(nn.Module):
    """Several models side by side: ``forward(x)`` returns every member's output for ``x``.

    The members are submodules named ``"0"``, ``"1"``, ... (from a list or tuple) or by the keys
    of a dict; the outputs are a tuple in that order. :func:`ssnfx.share` builds one from a list or
    dict; pass one to :func:`ssnfx.trace` or :func:`ssnfx.load` (``ssnfx.load(Members([...]),
    path)`` re-creates a shared ensemble from a checkpoint). Members take one input (a tensor, or
    one structure of tensors that each member indexes itself).

    Args:
        members: the models: a list or tuple, a dict of name to model, an ``nn.ModuleList`` or an
            ``nn.ModuleDict``. They may differ in family, width and depth; they must not share
            parameters with each other (each member is extracted and loaded on its own).

    Raises:
        EnsembleError: no members, a member that is not an ``nn.Module``, a bad name, or two
            members that share a parameter.

    Example:
        >>> import torch, ssnfx
        >>> both = ssnfx.Members({"wide": torch.nn.Linear(4, 8), "narrow": torch.nn.Linear(4, 2)})
        >>> [tuple(y.shape) for y in both(torch.randn(3, 4))]
        [(3, 8), (3, 2)]
    """

    def __init__(self, members: Sequence[nn.Module] | Mapping[str, nn.Module]) -> None:
        super().__init__()
        if isinstance(members, (Mapping, nn.ModuleDict)):
            items = [(_check_name(k), m) for k, m in members.items()]
        elif isinstance(members, (Sequence, nn.ModuleList)) and not isinstance(members, str):
            items = [(str(i), m) for i, m in enumerate(members)]
        else:
            raise EnsembleError(f"Members expects a list or dict of models, got "
                                f"{type(members).__name__}")
        if not items:
            raise EnsembleError("Members needs at least one model")
        owner: dict[int, str] = {}
        for name, m in items:
            if not isinstance(m, nn.Module):
                raise EnsembleError(f"member {name!r} is a {type(m).__name__}, not an nn.Module")
            for pname, p in m.named_parameters(remove_duplicate=False):
                other = owner.setdefault(id(p), f"{name}.{pname}")
                if other.split(".")[0] != name:
                    raise EnsembleError(
                        f"members share a parameter ({other!r} is {name}.{pname!r}): each member "
                        f"must own its parameters, to be extracted and loaded on its own; pass "
                        f"separate instances (copy.deepcopy), or make the shared part one model")
            self.add_module(name, m)
        #: The member names, in the order of the outputs.
        self.names: tuple[str, ...] = tuple(name for name, _ in items)

    def forward(self, x: Any) -> tuple[Any, ...]:
        outputs = []
        for name in self.names:
            module = getattr(self, name)
            out = member_output(name, module(x))
            if isinstance(out, fx.Proxy):  # tracing: the extracted member's class name
                out.node.meta[Meta.MEMBER] = type(module).__name__
            outputs.append(out)
        return tuple(outputs)


def as_members(models: Any) -> nn.Module:
    """``models`` as one module: a list, tuple, dict, ``nn.ModuleList`` or ``nn.ModuleDict``
    becomes :class:`Members`; a module (a Members too) is returned as it is.

    Example:
        >>> import torch
        >>> type(as_members([torch.nn.Linear(2, 2), torch.nn.Linear(2, 3)])).__name__
        'Members'
    """
    if isinstance(models, (nn.ModuleList, nn.ModuleDict, list, tuple, Mapping)):
        return Members(models)
    return models


def _markers(graph: fx.Graph) -> dict[str, fx.Node]:
    return {n.args[0]: n for n in graph.nodes
            if n.op == "call_function" and n.target is member_output}


def member_names(model: nn.Module) -> list[str]:
    """The members of a :class:`Members` model or of a traced, shared or folded one, in output
    order; ``[]`` for any other model.

    Example:
        >>> import torch, ssnfx
        >>> shared = ssnfx.share([torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)], budget=0.5)
        >>> ssnfx.member_names(shared)
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


def _unknown(model: nn.Module, names: Sequence[str]) -> None:
    known = member_names(model)
    if not known:
        raise EnsembleError(
            f"{type(model).__name__} is not a model of several members: make one with "
            f"ssnfx.share([m1, m2, ...]) (or trace ssnfx.Members([...])), then fold it if needed")
    missing = [n for n in names if n not in known]
    if missing:
        raise EnsembleError(f"the model has no member {missing[0]!r}; its members are {known}")


def _extract(model: fx.GraphModule, names: Sequence[str], single: bool) -> fx.GraphModule:
    """The graph(s) of ``model`` computing only ``names``' outputs, over what they read."""
    if not isinstance(model, fx.GraphModule):
        raise EnsembleError(f"expects a GraphModule from ssnfx.share, ssnfx.fold or ssnfx.trace "
                            f"over several members, got {type(model).__name__}")
    _unknown(model, names)
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
    instance of the member's class, and it exports on its own (:func:`ssnfx.export_pt2`). From a
    shared model it keeps the qualified names and reads the ensemble's store (the same
    parameters: training it trains the store of all members); to deploy a member, fold first:
    ``ssnfx.member(ssnfx.fold(shared), name)``. The result holds the input's tensors, not copies.

    Raises:
        EnsembleError: ``model`` has no members, or none named ``name``.

    Example:
        >>> import torch, ssnfx
        >>> small, large = torch.nn.Linear(8, 2), torch.nn.Sequential(torch.nn.Linear(8, 16),
        ...                                                            torch.nn.Linear(16, 2))
        >>> shared = ssnfx.share({"small": small, "large": large}, budget=0.5)
        >>> alone = ssnfx.member(ssnfx.fold(shared), "large")
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
        >>> pair = ssnfx.select_members(shared, ["2", "0"])
        >>> x = torch.randn(2, 8)
        >>> [torch.equal(a, b) for a, b in zip(pair(x), (shared(x)[2], shared(x)[0]))]
        [True, True]
    """
    if isinstance(names, str):
        raise EnsembleError(f"select_members expects a list of member names, got the string "
                            f"{names!r}; write [{names!r}], or use ssnfx.member for one member")
    if not names:
        raise EnsembleError("select_members needs at least one member name")
    return _extract(model, list(names), single=False)


class EnsembleLoss:
    """``loss_fn`` applied to every member's output, summed (optionally weighted): the loss of a
    model of several members, whose output is a tuple. Made by :func:`ensemble_loss`."""

    def __init__(self, loss_fn: Callable[..., torch.Tensor],
                 weights: Sequence[float] | None = None) -> None:
        if isinstance(loss_fn, EnsembleLoss):
            raise EnsembleError("ensemble_loss was given an ensemble loss: wrap the per-member "
                                "loss only once")
        self.loss_fn = loss_fn
        self.weights = None if weights is None else [float(w) for w in weights]

    def __call__(self, outputs: Sequence[Any], targets: Any) -> torch.Tensor:
        if not isinstance(outputs, (tuple, list)):
            raise EnsembleError(f"an ensemble loss expects the tuple of members' outputs, got "
                                f"{type(outputs).__name__}: use it with a model of several "
                                f"members (ssnfx.share([m1, m2, ...]))")
        weights = self.weights or [1.0] * len(outputs)
        if len(weights) != len(outputs):
            raise EnsembleError(f"{len(weights)} loss weights for {len(outputs)} members")
        losses = [w * self.loss_fn(out, targets) for w, out in zip(weights, outputs)]
        return torch.stack(losses).sum()

    def __repr__(self) -> str:
        return f"EnsembleLoss({self.loss_fn!r}, weights={self.weights})"


def ensemble_loss(loss_fn: Callable[..., torch.Tensor],
                  weights: Sequence[float] | None = None) -> EnsembleLoss:
    """The sum over members of ``loss_fn(member_output, targets)`` (times ``weights``).

    Every member is trained on the same targets, as in SWN's ensembles; the store receives the sum
    of the members' gradients. :func:`ssnfx.share` wraps its ``loss_fn`` in this when given
    several models (a loss already made by ``ensemble_loss`` is used as it is).

    Example:
        >>> import torch, ssnfx
        >>> loss = ssnfx.ensemble_loss(torch.nn.functional.cross_entropy)
        >>> logits = (torch.zeros(2, 4), torch.zeros(2, 4))
        >>> round(float(loss(logits, torch.tensor([0, 1]))), 4)  # 2 * log(4)
        2.7726
    """
    return EnsembleLoss(loss_fn, weights)


def average_probabilities(outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The ensemble's prediction: the mean over members of ``softmax(logits)`` (last dim).

    Example:
        >>> import torch
        >>> average_probabilities([torch.tensor([[0., 0.]]), torch.tensor([[10., -10.]])])
        tensor([[0.7500, 0.2500]])
    """
    if isinstance(outputs, torch.Tensor) or not len(outputs):
        raise EnsembleError("average_probabilities expects a non-empty sequence of logits, one "
                            "tensor per member")
    return torch.stack([o.float().softmax(-1) for o in outputs]).mean(0)


class EnsembleAverage(nn.Module):
    """Wraps a model of several members: ``forward(x)`` is the mean of the members' softmax
    probabilities (:func:`average_probabilities`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Any) -> torch.Tensor:
        return average_probabilities(self.model(x))


def ensemble(model: fx.GraphModule, names: Sequence[str] | None = None) -> EnsembleAverage:
    """The ensemble of ``names`` (all members when None): a module that runs only those members
    and returns their averaged softmax probabilities. With a folded model it is what an anytime
    subset deploys (:func:`ssnfx.anytime_subset`); it exports like any module.

    Example:
        >>> import torch, ssnfx
        >>> folded = ssnfx.fold(ssnfx.share([torch.nn.Linear(8, 3), torch.nn.Linear(8, 3)], 0.5))
        >>> probs = ssnfx.ensemble(folded)(torch.randn(4, 8))
        >>> torch.allclose(probs.sum(1), torch.ones(4))
        True
    """
    if names is None:
        _unknown(model, [])
        return EnsembleAverage(model)
    return EnsembleAverage(select_members(model, names))
