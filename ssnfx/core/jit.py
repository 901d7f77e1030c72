"""Just-in-time generation: each shared weight made right before the layer that reads it, dropped
after, and made again in backward, as activation checkpointing does for activations.

In the batched mode (the default) a group's generator makes all of its weights at the start of
the forward, and every weight and its gradient exist together during the step: the step's peak
holds the whole model's weights twice, whatever the budget. In this mode
(``ShareConfig(generation="jit")``) the rewrite puts, in place of each read of a shared
weight, a call that generates that one weight from the store, and runs the layer that reads it
under :func:`torch.autograd.graph.saved_tensors_hooks` that save, instead of the weight, how to
make it again. So a weight lives from its generation to the end of its layer's forward, and
again from the start to the end of its layer's backward, where its gradient goes at once into
one store-sized accumulator: the store receives its gradient once per step (through the group's
token, an input of every weight's generation, whose backward runs after all of theirs), and the
coefficients through autograd as usual.

The price is a second generation of each weight in backward and a loop over slots instead of a
batch per shape: measured in ``benchmarks/RESULTS.md`` ("Memory", "Training and inference
speed"), which says when each mode pays.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

__all__ = ["GENERATIONS", "JIT_NUMEL", "begin", "weight", "regenerating", "unwrap"]

#: The generation modes: every weight at the start of the forward, each before its use, or
#: (``"auto"``) the large weights before their use and the others batched.
GENERATIONS = ("batched", "jit", "auto")
#: In the ``"auto"`` mode, weights of at least this many elements (1 MiB in float32) are made
#: just in time: what they would hold through a step counts against its activations, while
#: the many small weights of mobile networks cost a loop step each when made one by one.
JIT_NUMEL = 1 << 18


class _Step:
    """One forward's state of a group: its generator and the store's gradient so far."""

    def __init__(self, gen: nn.Module) -> None:
        self.gen = gen
        self.grad: torch.Tensor | None = None


class _Token(torch.autograd.Function):
    """An empty tensor that every weight of the step is made from: its backward, which runs
    after every weight's, hands the store its summed gradient once."""

    @staticmethod
    def forward(ctx, store: torch.Tensor, step: _Step) -> torch.Tensor:  # type: ignore[override]
        ctx.step = step
        return store.new_empty(0)

    @staticmethod
    def backward(ctx, _: torch.Tensor) -> tuple[torch.Tensor | None, None]:  # type: ignore[override]
        grad, ctx.step.grad = ctx.step.grad, None
        return grad, None


class _Weight(torch.autograd.Function):
    """Slot ``i``'s weight from the store: its backward adds the store's gradient into the
    step's accumulator and returns the coefficients' through ``mix``."""

    @staticmethod
    def forward(ctx, token: torch.Tensor, mix: torch.Tensor, step: _Step,  # type: ignore[override]
                i: int) -> torch.Tensor:
        ctx.step, ctx.i = step, i
        ctx.save_for_backward(mix)
        return step.gen.slot_weight(i, mix)

    @staticmethod
    def backward(ctx, grad: torch.Tensor  # type: ignore[override]
                 ) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        mix, = ctx.saved_tensors
        step = ctx.step
        if step.gen.hook is not None:  # refine's measurement, as the batched weights call it
            step.gen.hook(ctx.i, grad)
        if step.grad is None:
            step.grad = torch.zeros_like(step.gen.store)
        grad_mix = torch.zeros_like(mix)
        step.gen.slot_backward(ctx.i, grad, mix, step.grad, grad_mix)
        return grad.new_zeros(0), grad_mix, None, None


def begin(gen: nn.Module) -> tuple[torch.Tensor, torch.Tensor, _Step]:
    """A group's step: its token, its mixing weights (computed once, through autograd) and the
    state its weights share. The first call of the group in a just-in-time graph, followed by
    one :func:`weight` per read and the reading layers wrapped by :func:`regenerating`.

    Example:
        >>> import torch, ssnfx
        >>> gm = ssnfx.trace(torch.nn.Sequential(torch.nn.Linear(64, 64)))
        >>> shared = ssnfx.rewrite(gm, ssnfx.make_plan(gm, 0.5, ssnfx.ShareConfig(
        ...     generation="jit")))
        >>> [n.target.__name__ for n in shared.graph.nodes if n.op == "call_function"]
        ['begin', 'weight', 'regenerating_linear']
    """
    mix = gen.mixing().to(gen.store.dtype)
    step = _Step(gen)
    token = _Token.apply(gen.store, step) if torch.is_grad_enabled() else gen.store.new_empty(0)
    return token, mix, step


def weight(started: tuple[torch.Tensor, torch.Tensor, _Step], i: int) -> torch.Tensor:
    """Slot ``i``'s weight, made now; in backward it is made again rather than kept (see
    :func:`regenerating`)."""
    token, mix, step = started
    w = _Weight.apply(token, mix, step, i) if torch.is_grad_enabled() \
        else step.gen.slot_weight(i, mix)
    w._ssnfx_regenerate = (step.gen, i, mix.detach())  # read by _pack
    return w


def _pack(t: torch.Tensor) -> Any:
    # A layer saves the weight itself, or a view of it (linear saves weight.t(), attention a
    # chunk of its input projection): either way, how to make it again.
    base = t if hasattr(t, "_ssnfx_regenerate") else t._base
    how = getattr(base, "_ssnfx_regenerate", None) if base is not None else None
    if how is None:
        return t
    view = None if base is t else (t.size(), t.stride(), t.storage_offset())
    return _Regenerate(*how, view)


class _Regenerate:
    """What a saved weight is replaced by: the generator, the slot, the mixing weights, and the
    view of the weight that was saved (None: the weight itself)."""

    __slots__ = ("gen", "i", "mix", "view")

    def __init__(self, gen: nn.Module, i: int, mix: torch.Tensor,
                 view: tuple[torch.Size, tuple[int, ...], int] | None) -> None:
        self.gen, self.i, self.mix, self.view = gen, i, mix, view


def _unpack(packed: Any) -> torch.Tensor:
    if not isinstance(packed, _Regenerate):
        return packed
    with torch.no_grad():
        w = packed.gen.slot_weight(packed.i, packed.mix)
    return w if packed.view is None else w.as_strided(*packed.view)


_REGENERATING: dict[Callable[..., Any], Callable[..., Any]] = {}


def regenerating(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run so that autograd saves, instead of each just-in-time weight it reads, how to
    make it again: what the rewrite calls in place of a layer that reads one (one wrapper per
    function, so that a graph's code names it once; :func:`unwrap` gives ``fn`` back, which is
    how fold restores the model's own calls).

    Example:
        >>> import torch
        >>> linear = regenerating(torch.nn.functional.linear)
        >>> linear(torch.ones(1, 2), torch.ones(3, 2)).tolist()
        [[2.0, 2.0, 2.0]]
        >>> unwrap(linear) is torch.nn.functional.linear
        True
    """
    wrapper = _REGENERATING.get(fn)
    if wrapper is None:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
                return fn(*args, **kwargs)

        wrapper.__name__ = wrapper.__qualname__ = \
            f"regenerating_{getattr(fn, '__name__', 'call')}"
        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
        _REGENERATING[fn] = wrapper
    return wrapper


def unwrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The function a :func:`regenerating` wrapper calls; any other function as it is."""
    return getattr(fn, "__wrapped__", fn) if fn in _REGENERATING.values() else fn
