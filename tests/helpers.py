"""One helper checks every pass the same way: trace, transform, graph.lint(), compare with eager."""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

import ssnfx
from ssnfx.checkpoint import with_aliases
from ssnfx.deploy import export_torchscript

__all__ = ["check_pipeline", "check_members", "count_params", "outputs_close", "first_tensor"]


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def first_tensor(out: Any) -> torch.Tensor:
    while not isinstance(out, torch.Tensor):
        out = out[0]
    return out


def outputs_close(a: Any, b: Any, atol: float = 1e-5, rtol: float = 1e-5,
                  equal_nan: bool = False) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol, equal_nan=equal_nan)


def check_pipeline(model: nn.Module, inputs: tuple[Any, ...], budget: float | int = 0.1,
                   config: ssnfx.ShareConfig | None = None, atol: float = 1e-5,
                   backward: bool = False, checkpoint: str | os.PathLike[str] | None = None,
                   kwargs: Mapping[str, Any] | None = None, fresh: nn.Module | None = None
                   ) -> tuple[fx.GraphModule, fx.GraphModule]:
    """Run trace -> rewrite -> fold on ``model`` and check each pass.

    * trace: the graph lints and computes exactly what the eager model computes;
    * rewrite: the graph lints, the parameter count meets the budget, and the shared model
      computes what the eager model computes with the generated weights loaded into it;
    * fold: the graph lints, it matches the shared model, and its state_dict loads strictly
      into the user's own model class;
    * with ``backward``: a training step (train mode) reaches every store with a finite
      gradient, and changes the shared model (so that a checkpoint differs from a fresh one);
    * with ``checkpoint`` (a file path): ssnfx.save and ssnfx.load into a copy of ``model``
      round-trip the plan, the state_dict and the outputs exactly.

    ``kwargs`` are keyword inputs given with ``inputs``; ``fresh`` is a new instance of the
    model's class (a deep copy of ``model`` when omitted) for the strict loads.

    Returns ``(shared, folded)``, both in eval mode.
    """
    kw = dict(kwargs or {})
    model = model.eval()
    with torch.no_grad():
        expected = model(*inputs, **kw)
    config = config or ssnfx.ShareConfig()
    gm = ssnfx.trace(model, leaf_modules=config.leaf_modules,
                     concrete_args=config.concrete_args, auto_leaves=config.auto_leaves)
    gm.graph.lint()
    with torch.no_grad():
        outputs_close(gm(*inputs, **kw), expected, atol=0, rtol=0)

    plan = ssnfx.make_plan(gm, budget, config)
    shared = ssnfx.rewrite(gm, plan).eval()
    shared.graph.lint()
    n = count_params(shared)
    assert 0.95 * plan.budget <= n <= plan.budget, (n, plan.budget)
    assert n == plan.shared_params

    folded = ssnfx.fold(shared)
    folded.graph.lint()
    assert not any(k.startswith("ssnfx.") for k in folded.state_dict())
    eager = copy.deepcopy(fresh if fresh is not None else model).eval()
    eager.load_state_dict(folded.state_dict(), strict=True)
    with torch.no_grad():
        out_shared = shared(*inputs, **kw)
        outputs_close(folded(*inputs, **kw), out_shared, atol=atol, rtol=atol)
        outputs_close(eager(*inputs, **kw), out_shared, atol=atol, rtol=atol)

    # What share returns: the user's class, the same store (its state_dict loads strictly),
    # the same outputs, and fold gives the user's class back.
    # (Several models share through their Members graph: share returns the rewrite's.)
    members = isinstance(model, ssnfx.ensemble.Members)
    bound = (ssnfx.rewrite(gm, plan) if members else ssnfx.passes.bind(model, gm, plan)).eval()
    assert type(bound).__name__ == type(model).__name__
    assert members or isinstance(bound, type(model))
    bound.load_state_dict(with_aliases(shared.state_dict(), plan), strict=True)
    mine = ssnfx.fold(bound)
    assert (members or type(mine) is type(model)) and not hasattr(mine, "ssnfx")
    eager.load_state_dict(mine.state_dict(), strict=True)
    with torch.no_grad():
        outputs_close(bound(*inputs, **kw), out_shared, atol=atol, rtol=atol)
        outputs_close(mine(*inputs, **kw), out_shared, atol=atol, rtol=atol)

    if backward:
        shared.train()
        out = shared(*inputs, **kw)
        sum(t.float().square().mean() for t in _tensors(out)).backward()
        for name, group in shared.ssnfx.named_children():
            grad = group.store.grad
            # Reached, and finite; not necessarily non-zero: a LayerNorm over one feature, for
            # one, outputs its bias whatever comes in, and passes no gradient back.
            assert grad is not None, f"store {name} received no gradient"
            assert torch.isfinite(grad).all(), (name, grad)
        torch.optim.SGD(shared.parameters(), lr=0.1).step()
        shared.zero_grad(set_to_none=True)
        shared.eval()
    if checkpoint is not None:
        # The stepped weights; through train mode, where models drop what they cache in eval
        # mode from their parameters (timm's attention bias caches: LeViT, EfficientFormer).
        bound.train().load_state_dict(with_aliases(shared.state_dict(), plan), strict=True)
        bound.eval()
        ssnfx.save(bound, checkpoint)
        again = ssnfx.load(copy.deepcopy(fresh if fresh is not None else model), checkpoint).eval()
        assert again.ssnfx.plan == bound.ssnfx.plan
        assert members or type(again) is type(bound)
        mine = bound.state_dict()
        assert again.state_dict().keys() == mine.keys()
        for k, v in again.state_dict().items():
            assert torch.equal(v, mine[k]), k
        with torch.no_grad():
            # Exactly the same outputs, NaN where the bound model's are: one SGD step at lr 0.1
            # can overflow a deep random network's norm statistics (inception_v3, convmixer).
            outputs_close(again(*inputs, **kw), bound(*inputs, **kw), atol=0, rtol=0,
                          equal_nan=True)
    return shared, folded


def _tensors(out: Any) -> list[torch.Tensor]:
    """The floating-point tensors of a model's output (a tensor, or nested tuples/lists/dicts)."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        out = list(out.values())
    return [t for o in out for t in _tensors(o)] if isinstance(out, (tuple, list)) else []


def check_members(shared: fx.GraphModule, folded: fx.GraphModule, inputs: tuple[Any, ...],
                  fresh: Mapping[str, nn.Module],
                  export: str | os.PathLike[str] | None = None) -> dict[str, fx.GraphModule]:
    """Check a model of several members (from ssnfx.share([...])) member by member.

    * ``ssnfx.ensemble.member`` of the shared model lints and reproduces that member's output;
    * ``ssnfx.ensemble.member`` of the folded model lints, keeps no member markers, reproduces
      the output, and its state_dict loads strictly into ``fresh[name]`` (a new instance of the
      member's class), which then reproduces it too;
    * with ``export`` (a folder): each folded member exports to TorchScript on its own, checked;
    * every member's output alone sends a finite, non-zero gradient to each store that
      generates one of its slots (last: train mode updates the shared model's norm statistics).

    Returns the folded members by name, in eval mode.
    """
    names = ssnfx.ensemble.member_names(shared)
    assert names == list(fresh), (names, list(fresh))
    plan = shared.ssnfx.plan
    shared.eval()
    with torch.no_grad():
        expected = shared(*inputs)
        expected_folded = folded(*inputs)
    alone = {}
    for i, name in enumerate(names):
        view = ssnfx.ensemble.member(shared, name)
        view.graph.lint()
        with torch.no_grad():
            outputs_close(view(*inputs), expected[i], atol=0, rtol=0)

        m = ssnfx.ensemble.member(folded, name).eval()
        m.graph.lint()
        assert not ssnfx.ensemble.member_names(m)
        model = fresh[name].eval()
        model.load_state_dict(m.state_dict(), strict=True)
        with torch.no_grad():
            outputs_close(m(*inputs), expected_folded[i], atol=0, rtol=0)
            outputs_close(model(*inputs), expected_folded[i])
        if export is not None:
            export_torchscript(m, inputs, os.path.join(export, f"{name}.pt"))
        alone[name] = m
    # Last: a training-mode forward updates the shared model's norm statistics.
    for i, name in enumerate(names):
        mine = {s.name for s in plan.slots if s.shared and s.name.startswith(f"{name}.")}
        assert mine, f"member {name} has no shared slot"
        groups = [g for g in plan.groups if mine & set(g.slots)]
        shared.train()
        shared.zero_grad(set_to_none=True)
        sum(t.float().square().mean() for t in _tensors(shared(*inputs)[i])).backward()
        for g in groups:
            grad = getattr(shared.ssnfx, g.name).store.grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, \
                f"member {name} sends no gradient to store {g.name}"
        shared.zero_grad(set_to_none=True)
    shared.eval()
    return alone
