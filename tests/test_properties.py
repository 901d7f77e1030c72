"""Property tests: random architectures, budgets and configs through every pass.

The examples come from hypothesis (profiles in conftest.py: "ci" by default, small and
reproducible; HYPOTHESIS_PROFILE=nightly for a long run). A failing example prints as a NetSpec,
which rebuilds the network: ``RandomNet(NetSpec(...))``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import tempfile

import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

import ssnfx
import ssnfx.core.config
import ssnfx.core.jit
from ssnfx.core.selector import upsample_source
from ssnfx.passes.planner import MAX_BUDGET_RATIO, original_param_count, resolve_budget

from helpers import check_pipeline, count_params
from models import NetSpec, RandomNet

WIDTHS = st.integers(1, 32)
#: The blocks each kind of activation takes (NetSpec documents them).
BLOCKS = {"vec": ["linear", "norm", "branch"],
          "seq": ["linear", "conv", "norm", "attn", "branch"],
          "img": ["conv", "norm", "branch"]}
KIND = {"tokens": "seq", "sequence": "seq", "vector": "vec", "image": "img"}


@st.composite
def _simple_block(draw: st.DrawFn, kind: str, width: int, names: list[str]
                  ) -> tuple[tuple, int]:
    """A linear, conv, norm or attention block for an input of ``width``, and its output width."""
    name = draw(st.sampled_from(names))
    if name == "linear":
        out = draw(WIDTHS)
        return ("linear", out, draw(st.booleans())), out
    if name == "conv":
        out = draw(WIDTHS)
        return ("conv", out, draw(st.sampled_from([1, 3]))), out
    if name == "attn":
        heads = draw(st.sampled_from([h for h in (1, 2, 4) if width % h == 0]))
        return ("attn", heads), width
    return ("norm",), width


@st.composite
def net_specs(draw: st.DrawFn) -> NetSpec:
    """Random stacks of Linear/Conv/Embedding/norm/attention blocks with branches and ties."""
    source = draw(st.sampled_from(sorted(KIND)))
    kind = KIND[source]
    width = draw(WIDTHS)
    embed = draw(WIDTHS) if source == "tokens" else 0
    current = embed if source == "tokens" else width
    blocks: list[tuple] = []
    square: dict[int, int] = {}  # position of a width-preserving linear/conv -> its width
    for position in range(draw(st.integers(0, 4))):
        names = list(BLOCKS[kind])
        reusable = [p for p, w in square.items() if w == current]
        if reusable:
            names.append("reuse")
        name = draw(st.sampled_from(names))
        if name == "reuse":
            blocks.append(("reuse", draw(st.sampled_from(reusable))))
            continue
        if name == "branch":
            simple = [n for n in BLOCKS[kind] if n not in ("branch", "attn")]
            paths = []
            for _ in range(2):
                path, w = [], current
                for _ in range(draw(st.integers(0, 2))):
                    block, w = draw(_simple_block(kind, w, simple))
                    path.append(block)
                paths.append(tuple(path))
            out = draw(WIDTHS)
            blocks.append(("branch", paths[0], paths[1], out))
            current = out
            continue
        block, out = draw(_simple_block(kind, current, [name]))
        if name in ("linear", "conv") and out == current:
            square[position] = out
        blocks.append(block)
        current = out
    tie = source == "tokens" and draw(st.booleans())
    return NetSpec(source, width, embed, tuple(blocks), tie, draw(WIDTHS))


configs = st.builds(
    ssnfx.ShareConfig,
    method=st.sampled_from(sorted(ssnfx.core.config.METHODS)),
    combiner=st.sampled_from((None, *sorted(ssnfx.core.config.COMBINERS))),
    strategy=st.sampled_from(["single", "depth", "shape", "random"]),
    groups=st.integers(1, 3),
    candidates=st.integers(1, 5),
    share_biases=st.booleans(),
    share_norms=st.booleans(),
    generation=st.sampled_from(ssnfx.core.jit.GENERATIONS)).flatmap(
    # SWN's own setting: hard or soft sharing.
    lambda c: st.booleans().map(lambda hard: dataclasses.replace(
        c, options={"hard_sharing": hard}) if c.method == "swn" else c))


def _budget(fraction: float, as_count: bool, model: torch.nn.Module) -> float | int:
    """A float budget, or the same fraction as an absolute (int) count."""
    return max(1, int(fraction * count_params(model))) if as_count else fraction


def _check_refusal(gm: torch.fx.GraphModule, budget: float | int, config: ssnfx.ShareConfig,
                   message: str) -> None:
    """A BudgetError is acceptable only when what it says is true."""
    original = original_param_count(gm)
    if "no shareable parameters" in message:
        event("refused: nothing shareable")
        # Independently of the planner: no matrix, and no vector the config would share.
        for s in ssnfx.passes.slots_of(gm):
            norm = "Norm" in s.kind
            assert len(s.shape) == 0 or (not config.share_norms if norm else
                                         (sum(d > 1 for d in s.shape) < 2
                                          and not config.share_biases)), s
        return
    count = math.floor(budget * original) if isinstance(budget, float) else budget
    if "less than one parameter" in message:
        event("refused: less than one parameter")
        assert count == 0, message
        return
    if "the most ssnfx accepts" in message:
        event("refused: above the cap")
        assert count > MAX_BUDGET_RATIO * original, message
        return
    event("refused: below the least")
    found = re.search(r"below the least this model can be shared with: ([\d,]+)", message)
    assert found, message
    least = int(found.group(1).replace(",", ""))
    assert count < least, message
    if least > MAX_BUDGET_RATIO * original:
        assert "no budget can share this model" in message, message
        return
    # The least budget the message names is one the model can be shared with.
    plan = ssnfx.make_plan(gm, least, config)
    assert plan.shared_params <= least


@given(spec=net_specs(), fraction=st.floats(0.01, 4.0), as_count=st.booleans(), config=configs)
def test_random_models_through_every_pass(spec, fraction, as_count, config):
    """Budget met (95% to 100%), forward and backward run and reach every store, fold matches
    the shared model and loads strictly into the original, save/load round-trips."""
    torch.manual_seed(0)
    model = RandomNet(spec)
    budget = _budget(fraction, as_count, model)
    gm = ssnfx.trace(model)
    try:
        ssnfx.make_plan(gm, budget, config)
    except ssnfx.BudgetError as e:
        _check_refusal(gm, budget, config, str(e))
        return
    event("shared")
    with tempfile.TemporaryDirectory() as tmp:
        check_pipeline(model, (spec.example_input(),), budget, config, backward=True,
                       checkpoint=os.path.join(tmp, "shared.safetensors"))


@settings(max_examples=4 * settings().max_examples)
@given(spec=net_specs(), fraction=st.floats(0.01, 4.0), as_count=st.booleans(), config=configs)
def test_random_plans_meet_the_budget(spec, fraction, as_count, config):
    """The budget arithmetic alone (no weights generated), over more examples: every plan is
    within 95% to 100% of its budget, and every refusal tells the truth."""
    torch.manual_seed(0)
    model = RandomNet(spec)
    budget = _budget(fraction, as_count, model)
    gm = ssnfx.trace(model)
    try:
        plan = ssnfx.make_plan(gm, budget, config)
    except ssnfx.BudgetError as e:
        _check_refusal(gm, budget, config, str(e))
        return
    assert 0.95 * plan.budget <= plan.shared_params <= plan.budget, (plan.shared_params,
                                                                     plan.budget)
    assert plan.budget == resolve_budget(budget, count_params(model))
    assert sorted(n for g in plan.groups for n in g.slots) == sorted(
        s.name for s in plan.slots if s.shared)
    assert ssnfx.SharingPlan.from_json(plan.to_json()) == plan


DTYPES = {torch.float32: 1e-5, torch.float64: 1e-10, torch.float16: 1e-2, torch.bfloat16: 5e-2}


@given(widths=st.lists(st.integers(0, 12), min_size=2, max_size=4),
       dtype=st.sampled_from([*DTYPES, torch.complex64]), fraction=st.floats(0.05, 2.0),
       share_biases=st.booleans(), generation=st.sampled_from(ssnfx.core.jit.GENERATIONS))
def test_empty_parameters_and_dtypes(widths, dtype, fraction, share_biases, generation):
    """Linear stacks with 0-wide layers (0-element weights and biases) in every floating and a
    complex dtype: a 0-element parameter stays private, a complex one that would be shared is
    a PlanError saying so, and whatever is shared folds to the model's own parameters."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Linear(a, b) for a, b in zip(widths, widths[1:])))
    model = model.to(dtype).eval()
    config = ssnfx.ShareConfig(share_biases=share_biases, generation=generation)
    try:
        shared = ssnfx.share(model, fraction, config).eval()
    except ssnfx.PlanError as e:
        event("refused: complex")
        assert dtype.is_complex and "cannot share complex parameters" in str(e), e
        return
    except ssnfx.BudgetError as e:
        event("refused: budget")
        assert re.search(r"no shareable parameters|has no parameters|below the least|less than "
                         r"one", str(e)), e
        return
    event(f"shared {dtype}")
    assert not dtype.is_complex  # anything shared would be complex
    plan = shared.ssnfx.plan
    assert all(not s.shared for s in plan.slots if s.numel == 0)
    assert count_params(shared) <= plan.budget
    folded = ssnfx.fold(shared)
    fresh = torch.nn.Sequential(*(torch.nn.Linear(a, b) for a, b in zip(widths, widths[1:])))
    fresh = fresh.to(dtype).eval()
    fresh.load_state_dict(folded.state_dict(), strict=True)
    assert all(p.dtype == dtype for p in folded.parameters())
    x = torch.randn(3, widths[0]).to(dtype)
    with torch.no_grad():
        out = shared(x)
        assert out.dtype == dtype
        tol = DTYPES[dtype]
        torch.testing.assert_close(fresh(x), out, atol=tol, rtol=tol)


# ---- bugs the property tests found (minimal examples from shrinking), now fixed ------------


def test_upsampling_a_tall_superweight_from_a_tiny_store():
    """selector.upsample_source gave a source block larger than the store when a SuperWeight
    is far taller than wide (upsample_source(2, 32, 3) was (4, 1))."""
    # Conv1d(1, 32, 3): weight (32, 1, 3) is a 32 x 3 SuperWeight; 32 private bias parameters,
    # no coefficients (rr), so a budget of 34 leaves a store of 2 parameters.
    ssnfx.share(torch.nn.Conv1d(1, 32, 3), 34, ssnfx.ShareConfig(combiner="rr"))
    assert math.prod(upsample_source(2, 32, 3)) <= 2


def test_weight_generated_from_a_one_parameter_store_keeps_its_scale():
    """A weight upsampled from one store parameter is constant; its spread is rounding noise,
    which once made its gain ~1e6 (weights of 1.8e5 where the layer's own std is 0.07)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 64)
    # 64 private bias parameters, no coefficients (rr): a budget of 65 leaves a 1-parameter store.
    shared = ssnfx.share(layer, 65, ssnfx.ShareConfig(combiner="rr"))
    assert shared.ssnfx.g0.store.numel() == 1
    weight = shared.ssnfx.g0()[0]
    assert weight.abs().max() < 10 * layer.weight.std()
