"""The shared model as the user's own class: its methods, attributes and hooks, with generated
weights.

:func:`bind_store` turns a copy of the user's model into the shared model: the copy keeps its
class (a subclass made for it, as ``torch.fx.GraphModule`` and ``torch.nn.utils.parametrize``
make theirs, so ``isinstance`` holds and every method works), loses the shared parameters, and
gains the parameter store as ``ssnfx``. Each module that owned a shared parameter gets the same
treatment: its class becomes a subclass in which that name is a property returning the
generated weight. So any code that reads ``module.weight`` (the model's ``forward``, a
Hugging Face ``generate``, a timm ``forward_features``, a user's ``embed``) reads the generated
weight, and a loss through any of them trains the store.

Where the weights come from (:class:`Binding`):

* during a call of the model (its ``__call__``, once however deep the calls nest), the first read
  generates every weight of the model at once (the batched mode: one generator call per group)
  and the call's other reads reuse them; in the just-in-time mode
  (``ShareConfig(generation="jit")``) each layer's call makes the weights it reads, drops them
  when it returns, and backward makes them again (:mod:`ssnfx.core.jit`);
* under ``torch.no_grad`` (inference, ``generate()``), the weights are made once and reused
  while the store's tensors are unchanged (their version counters, data pointers and dtypes):
  a token of ``generate()`` costs what the folded model's does;
* any other read (a method other than ``forward`` called with gradients on) makes just the
  weight it reads, through autograd.

:func:`fold_model` gives the user's class back with plain weights, as peft's
``merge_and_unload`` does.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ssnfx.core import jit
from ssnfx.core._io import write_atomic
from ssnfx.core.errors import CheckpointError, PlanError
from ssnfx.core.layer_kinds import LayerKind, kind_of
from ssnfx.core.markers import STORE
from ssnfx.core.plan import SharingPlan

__all__ = ["Binding", "bind_store", "binding_of", "check_bound", "fold_model", "is_bound",
           "PLAN_FILE"]

#: The plan beside a Hugging Face ``save_pretrained`` folder of a shared model.
PLAN_FILE = "ssnfx_plan.json"

_BINDING = "_ssnfx_binding"
_SLOTS = "_ssnfx_slots"
_ORIGINAL = "_ssnfx_original_class"


class Binding:
    """The weights of one shared model: its store, and the state of the call in progress.

    A plain object, not a module: every module of the shared model that reads a generated
    weight holds it, and ``deepcopy`` of the model copies it once with the store.
    """

    def __init__(self, store: nn.Module) -> None:
        self.store = store
        plan: SharingPlan = store.plan
        self.index = {name: (g.name, i) for g in plan.groups for i, name in enumerate(g.slots)}
        #: The slots made just in time (the others are batched: SharingPlan.just_in_time).
        self.jit = {name for g in plan.groups for name in plan.just_in_time(g)}
        self.depth = 0
        self.weights: dict[str, torch.Tensor] | None = None  # this call's (batched)
        self.steps: dict[str, Any] = {}  # this call's groups started (just in time)
        # Just in time: a layer's weights while its call runs, read once however often the
        # layer reads them (attention reads its projections to choose its fast path, then again
        # to run), and dropped when it returns; one frame per layer call in progress.
        self.frames: list[dict[str, torch.Tensor]] = []
        self.cached: tuple[tuple[Any, ...], dict[str, torch.Tensor]] | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> "Binding":
        # The store only: a call's weights (autograd's, not leaves) belong to this model.
        return Binding(copy.deepcopy(self.store, memo))

    # ---- the call in progress ----------------------------------------------------------------
    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """One call of the model: weights are made once for it (see the module's docstring)."""
        self.depth += 1
        try:
            if self.depth == 1 and self.jit and torch.is_grad_enabled():
                # Autograd saves, instead of a just-in-time weight, how to make it again.
                with torch.autograd.graph.saved_tensors_hooks(jit._pack, jit._unpack):
                    yield
            else:
                yield
        finally:
            self.depth -= 1
            if self.depth == 0:
                self.weights, self.steps = None, {}

    def weight(self, name: str) -> torch.Tensor:
        """The generated weight of slot ``name``, made or reused as the module's docstring says."""
        made = self.weights.get(name) if self.weights is not None else None
        if made is not None:  # this call's, made or reused at its first read
            return made
        if not torch.is_grad_enabled():
            weights = self._inference()
            if self.depth:
                self.weights = weights
            return weights[name]
        self.cached = None  # training: no stale copy of every weight kept alongside
        if self.depth and name not in self.jit:
            if self.weights is None:  # the batched ones, at the call's first read of one
                self.weights = self.store.generate(just_in_time=False)
            return self.weights[name]
        frame = self.frames[-1] if self.depth and self.frames else None
        if frame is not None and name in frame:
            return frame[name]
        group, i = self.index[name]
        step = self.steps.get(group) if self.depth else None
        if step is None:
            step = jit.begin(getattr(self.store, group))
            if self.depth:
                self.steps[group] = step
        w = jit.weight(step, i)
        if frame is not None:
            frame[name] = w
        return w

    def _inference(self) -> dict[str, torch.Tensor]:
        tensors = (*self.store.parameters(), *self.store.buffers())
        if any(t.is_inference() for t in tensors):  # no version counter: never reused
            return self.store.generate()
        key = tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in tensors)
        if self.cached is None or self.cached[0] != key:
            self.cached = None  # the old weights go before the new ones are made
            self.cached = (key, self.store.generate())
        return self.cached[1]


def binding_of(model: nn.Module) -> Binding | None:
    """The :class:`Binding` of a shared model made by :func:`bind_store`, else None."""
    binding = model.__dict__.get(_BINDING)
    return binding if isinstance(binding, Binding) and _ORIGINAL in type(model).__dict__ \
        else None


def is_bound(model: nn.Module) -> bool:
    """True for a shared model of the user's class (made by :func:`bind_store`)."""
    return binding_of(model) is not None


def check_bound(shared: nn.Module) -> None:
    """Raise PlanError unless every shared slot of ``shared`` is still read from its store: a
    module replaced after share (timm's ``reset_classifier``, an assignment) holds weights
    the plan does not describe, which a checkpoint or fold would get silently wrong."""
    binding = binding_of(shared)
    if binding is None:
        return
    for s in binding.store.plan.slots:
        for name in (s.name, *s.aliases) if s.shared else ():
            owner, _, local = name.rpartition(".")
            try:
                module = shared.get_submodule(owner)
            except AttributeError:
                module = None
            if module is None or module.__dict__.get(_BINDING) is not binding \
                    or module.__dict__.get(_SLOTS, {}).get(local) != s.name:
                raise PlanError(
                    f"{name!r} of the shared {type(shared).__name__} is no longer generated "
                    f"from its store: {owner or 'the model'!r} was replaced or changed after "
                    f"share (reset_classifier, resize_token_embeddings, an assignment), so the "
                    f"plan no longer describes the model; change the model first, then share it")


# ---- the classes -----------------------------------------------------------------------------
class _Shared:
    """What every module of a shared model whose class ssnfx made has: copies, and no pickle
    (its class is made at run time, and ssnfx promises nothing it writes needs unpickling)."""

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise CheckpointError(
            f"torch.save of a shared {type(self).__name__} (a model, or a layer of one) would "
            f"pickle its classes and code, which ssnfx does not support: save the model with "
            f"ssnfx.save(shared, path) and read it back with ssnfx.load(model, path) (tensors "
            f"and the plan, nothing unpickled), or torch.save(shared.state_dict()); ssnfx.fold "
            f"gives the model's own class with plain weights, which pickles as the model does")

    def __copy__(self) -> Any:
        res = type(self).__new__(type(self))
        res.__dict__.update(self.__dict__)
        return res

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        res = type(self).__new__(type(self))
        memo[id(self)] = res
        res.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return res


class _SharedLayer(_Shared):
    """A layer of a just-in-time model: its call holds a frame for the weights it reads."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        frames = self.__dict__[_BINDING].frames
        frames.append({})
        try:
            return super().__call__(*args, **kwargs)  # type: ignore[misc]
        finally:
            frames.pop()


class _SharedRoot(_Shared):
    """What the shared model's class adds to the user's: a call that makes weights once."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.__dict__[_BINDING].call():
            return super().__call__(*args, **kwargs)  # type: ignore[misc]


class _SharedPretrained:
    """A Hugging Face model's ``save_pretrained`` (what a ``Trainer`` checkpoint calls) writes
    the plan beside the weights, so that ``ssnfx.load(model, folder)`` rebuilds the shared model;
    ``from_pretrained`` of the shared class would build a plain one, so it says what to do."""

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        check_bound(self)  # type: ignore[arg-type]
        out = super().save_pretrained(save_directory, *args, **kwargs)  # type: ignore[misc]
        if kwargs.get("is_main_process", True):
            plan = self.__dict__[_BINDING].store.plan
            write_atomic(Path(save_directory) / PLAN_FILE,
                         lambda tmp: tmp.write_text(plan.to_json() + "\n"))
        return out

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        raise PlanError(
            f"from_pretrained of a shared {cls.__name__} would build an unshared one: load a "
            f"shared folder with ssnfx.load({cls.__name__}(config), folder), or fold the shared "
            f"model and save_pretrained that for the class's own from_pretrained")


class _SharedSequence:
    """A Sequential or ModuleList model holds the store as one more child: its iteration,
    length and indexing (its forward, for a Sequential) leave it out."""

    def _members(self) -> list[nn.Module]:
        return [m for k, m in self._modules.items() if k != STORE]  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self._members())

    def __len__(self) -> int:
        return len(self._members())

    def __getitem__(self, idx: Any) -> Any:
        if isinstance(idx, slice):  # a plain container of the (still shared) layers
            part = self._members()[idx]
            return nn.Sequential(*part) if isinstance(self, nn.Sequential) else nn.ModuleList(part)
        return self._members()[idx]


class _SharedDict:
    """A ModuleDict model: its keys, values and items leave the store out."""

    def keys(self) -> list[str]:
        return [k for k in self._modules if k != STORE]  # type: ignore[attr-defined]

    def items(self) -> list[tuple[str, nn.Module]]:
        return [(k, self._modules[k]) for k in self.keys()]  # type: ignore[attr-defined]

    def values(self) -> list[nn.Module]:
        return [m for _, m in self.items()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


_CLASSES: dict[tuple[type, tuple[str, ...], bool], type] = {}


def _weight_property(local: str) -> property:
    def get(self: nn.Module) -> torch.Tensor:
        return self.__dict__[_BINDING].weight(self.__dict__[_SLOTS][local])

    def set_(self: nn.Module, value: Any) -> None:
        raise PlanError(
            f"{type(self).__name__}.{local} is generated by ssnfx from the shared store "
            f"(slot {self.__dict__[_SLOTS][local]!r}) and cannot be assigned: train the store, "
            f"or ssnfx.fold(shared) for a model with plain weights")

    return property(get, set_, doc=f"The generated weight {local!r} (ssnfx).")


def _flat_weights(self: nn.RNNBase) -> list[torch.Tensor | None]:
    # An RNN caches its weights in a list when they are set; here they are read at each call.
    return [getattr(self, n) if hasattr(self, n) else None for n in self._flat_weights_names]


def _class_for(cls: type, locals_: tuple[str, ...], root: bool, jit: bool = False) -> type:
    """The subclass of ``cls`` whose ``locals_`` are generated weights (and, for the model
    itself, whose call makes them once). It takes ``cls``'s names, so that what reads a class
    name (``save_pretrained``'s ``architectures``, a repr) sees the user's."""
    key = (cls, locals_, root, jit)
    made = _CLASSES.get(key)
    if made is None:
        ns: dict[str, Any] = {name: _weight_property(name) for name in locals_}
        ns.update(__module__=cls.__module__, __qualname__=cls.__qualname__,
                  __doc__=cls.__doc__, **{_ORIGINAL: cls})
        if issubclass(cls, nn.RNNBase) and locals_:
            # Its own code assigns the list (on .to(), say): read at each call instead.
            ns["_flat_weights"] = property(_flat_weights, lambda self, value: None)
        bases: tuple[type, ...] = (_SharedLayer if jit else _Shared, cls)
        if root:
            container = _SharedSequence if issubclass(cls, (nn.Sequential, nn.ModuleList)) \
                else _SharedDict if issubclass(cls, nn.ModuleDict) else None
            pretrained = (_SharedPretrained,) if hasattr(cls, "save_pretrained") else ()
            bases = (_SharedRoot, *pretrained, *((container,) if container else ()), cls)
        made = type(cls.__name__, bases, ns)
        _CLASSES[key] = made
    return made


_HOOK = "_ssnfx_refresh_hook"


def _refresh(module: nn.Module, args: Any) -> None:
    kind_of(module).after_weights_change(module)


def _tell_on_each_call(module: nn.Module) -> None:
    """A layer kind that caches its weights (a registered one; RNNs read theirs through a
    property instead) is told before each call that they changed, as after functional_call."""
    kind = kind_of(module)
    if isinstance(module, nn.RNNBase) or \
            type(kind).after_weights_change is LayerKind.after_weights_change:
        return
    kind.after_weights_change(module)
    module.__dict__[_HOOK] = module.register_forward_pre_hook(_refresh).id


def bind_store(model: nn.Module, store: nn.Module) -> nn.Module:
    """The shared model: a copy of ``model`` of its own class whose shared parameters (by the
    store's plan) are generated from ``store``, registered as ``shared.ssnfx``.

    The copy shares no tensor with ``model``: its private parameters and buffers are copies,
    and the shared parameters are not copied at all (they are generated).

    Example:
        >>> import torch, ssnfx
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
        >>> shared = ssnfx.share(model, budget=0.5)
        >>> isinstance(shared, torch.nn.Sequential), type(shared[0]).__name__
        (True, 'Linear')
        >>> sorted(n for n, _ in shared.named_parameters())[:2]
        ['0.bias', '1.bias']
    """
    plan: SharingPlan = store.plan
    shared = [s for s in plan.slots if s.shared]
    memo: dict[int, Any] = {}
    for s in shared:  # a memo entry of None: deepcopy does not copy what is dropped next
        memo[id(model.get_parameter(s.name))] = None
    out = copy.deepcopy(model, memo)
    binding = Binding(store)
    # By module, not by name: a module registered under two names is one module to change.
    owners: dict[int, tuple[nn.Module, dict[str, str]]] = {}
    for s in shared:
        for name in (s.name, *s.aliases):
            owner, _, local = name.rpartition(".")
            module = out.get_submodule(owner)
            owners.setdefault(id(module), (module, {}))[1][local] = s.name
    for module, slots in owners.values():
        for local in slots:
            module._parameters.pop(local, None)
        module.__dict__[_SLOTS] = slots
        module.__dict__[_BINDING] = binding
        if module is not out:
            module.__class__ = _class_for(type(module), tuple(sorted(slots)), root=False,
                                          jit=not binding.jit.isdisjoint(slots.values()))
        _tell_on_each_call(module)
    root_locals = tuple(sorted(owners.get(id(out), (out, {}))[1]))
    out.__class__ = _class_for(type(out), root_locals, root=True)
    out.__dict__[_BINDING] = binding
    out.add_module(STORE, store)
    return out


def fold_model(shared: nn.Module) -> nn.Module:
    """The user's class with plain weights under the original names (generated once, equal
    weights of hard sharing as one tensor), in ``shared``'s mode; ``shared`` is not modified.

    Example:
        >>> import torch, ssnfx
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
        >>> folded = ssnfx.fold(ssnfx.share(model, budget=0.5))
        >>> type(folded) is torch.nn.Sequential, type(folded[0]) is torch.nn.Linear
        (True, True)
    """
    binding = binding_of(shared)
    if binding is None:
        raise PlanError(f"fold_model expects a shared model from ssnfx.share; "
                        f"{type(shared).__name__} is not one")
    check_bound(shared)
    store = binding.store
    with torch.no_grad():
        values = store.generate(merge_equal=True)
    # The store and binding are not copied: a memo entry of None, removed below.
    out = copy.deepcopy(shared, {id(store): None, id(binding): None})
    del out._modules[STORE]
    params: dict[int, nn.Parameter] = {}
    for module in out.modules():
        slots = module.__dict__.pop(_SLOTS, {})
        module.__dict__.pop(_BINDING, None)
        hook = module.__dict__.pop(_HOOK, None)
        if hook is not None:
            del module._forward_pre_hooks[hook]
        original = type(module).__dict__.get(_ORIGINAL)
        if original is not None:
            module.__class__ = original
        for local, slot in slots.items():
            w = values[slot]
            if id(w) not in params:
                params[id(w)] = nn.Parameter(w.detach().clone())
            module.register_parameter(local, params[id(w)])
        if slots:
            kind_of(module).after_weights_change(module)
    return out
