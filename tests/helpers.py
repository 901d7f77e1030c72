"""One helper checks every pass the same way: trace, transform, graph.lint(), compare with eager."""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

import ssnfx

__all__ = ["check_pipeline", "count_params", "outputs_close", "first_tensor"]


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def first_tensor(out: Any) -> torch.Tensor:
    while not isinstance(out, torch.Tensor):
        out = out[0]
    return out


def outputs_close(a: Any, b: Any, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def check_pipeline(model: nn.Module, inputs: tuple[Any, ...], budget: float | int = 0.1,
                   config: ssnfx.ShareConfig | None = None, atol: float = 1e-5
                   ) -> tuple[fx.GraphModule, fx.GraphModule]:
    """Run trace -> rewrite -> fold on ``model`` and check each pass.

    * trace: the graph lints and computes exactly what the eager model computes;
    * rewrite: the graph lints, the parameter count meets the budget, and the shared model
      computes what the eager model computes with the generated weights loaded into it;
    * fold: the graph lints, it matches the shared model, and its state_dict loads strictly
      into the user's own model class.

    Returns ``(shared, folded)``, both in eval mode.
    """
    model = model.eval()
    with torch.no_grad():
        expected = model(*inputs)
    gm = ssnfx.trace(model)
    gm.graph.lint()
    with torch.no_grad():
        outputs_close(gm(*inputs), expected, atol=0, rtol=0)

    plan = ssnfx.make_plan(gm, budget, config)
    shared = ssnfx.rewrite(gm, plan).eval()
    shared.graph.lint()
    n = count_params(shared)
    assert 0.95 * plan.budget <= n <= plan.budget, (n, plan.budget)
    assert n == plan.shared_params

    folded = ssnfx.fold(shared)
    folded.graph.lint()
    assert not any(k.startswith("ssnfx.") for k in folded.state_dict())
    eager = copy.deepcopy(model)
    eager.load_state_dict(folded.state_dict(), strict=True)
    with torch.no_grad():
        out_shared = shared(*inputs)
        outputs_close(folded(*inputs), out_shared, atol=atol, rtol=atol)
        outputs_close(eager(*inputs), out_shared, atol=atol, rtol=atol)
    return shared, folded
