"""Budget arithmetic and its errors (passes/planner.py): every refusal names the budget or the
model and says what to pass instead."""
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

import ssnfx
from ssnfx.core.grouping import auto_bins, group_slots
from ssnfx.core.methods import DEFAULT_TILES_PER_SLOT, get_method
from ssnfx.core.selector import select_blocks
from ssnfx.passes.planner import MAX_BUDGET_RATIO, resolve_method

from models import SmallCNN, same_shape_stack

N = 15_498  # SmallCNN's parameters
USAGE = f"pass a fraction of the model's {N:,} trainable parameters as a float (0.1 keeps " \
        f"10%) or a parameter count as an int"


@pytest.fixture(scope="module")
def cnn():
    gm = ssnfx.trace(SmallCNN())
    assert sum(s.numel for s in ssnfx.passes.slots_of(gm)) == N
    return gm


@pytest.mark.parametrize("budget,problem", [
    (0, "budget must be positive, got 0 (= 0 of"),
    (-3, "budget must be positive, got -3"),
    (0.0, "budget must be a finite fraction > 0, got 0.0"),
    (-0.5, "budget must be a finite fraction > 0, got -0.5"),
    (float("nan"), "budget must be a finite fraction > 0, got nan"),
    (float("inf"), "budget must be a finite fraction > 0, got inf"),
    (float("-inf"), "budget must be a finite fraction > 0, got -inf"),
    ("0.1", "budget must be a float or an int, got str '0.1'"),
    (None, "budget must be a float or an int, got NoneType None"),
    (True, "budget must be a float or an int, got bool True"),
    ([0.1], "budget must be a float or an int, got list [0.1]"),
    (torch.tensor(0.1), "budget must be a float or an int, got Tensor"),
    (1e-9, "budget is less than one parameter, got 1e-09 (= 0 of"),
])
def test_malformed_budgets_name_the_value_and_the_remedy(cnn, budget, problem):
    with pytest.raises(ssnfx.BudgetError) as err:
        ssnfx.make_plan(cnn, budget)
    assert problem in str(err.value)
    assert USAGE in str(err.value)


def test_share_refuses_the_same_budgets():
    with pytest.raises(ssnfx.BudgetError, match=re.escape("got str '10%'")):
        ssnfx.share(SmallCNN(), "10%")


def test_numpy_scalars_are_budgets(cnn):
    assert ssnfx.make_plan(cnn, np.float64(0.1)).budget == ssnfx.make_plan(cnn, 0.1).budget
    assert ssnfx.make_plan(cnn, np.int64(5000)).budget == 5000


@pytest.mark.parametrize("budget", [0.0005, 1, 266])
def test_budget_below_the_least_says_the_least_and_it_is_exact(cnn, budget):
    with pytest.raises(ssnfx.BudgetError) as err:
        ssnfx.make_plan(cnn, budget)
    msg = str(err.value)
    # 250 private (biases, batch norms) + 16 coefficients (4 slots x 4 WAvg candidates) + 1.
    assert "below the least this model can be shared with: 267 (1.72% of its 15,498 " \
        "trainable" in msg
    assert "250 private parameters" in msg and "16 coefficients" in msg
    assert "Raise the budget" in msg and "'rr', 'avg'" in msg
    plan = ssnfx.make_plan(cnn, 267)  # the least it names is feasible, and met exactly
    assert plan.shared_params == 267


def test_least_above_the_cap_says_no_budget_can_do(cnn):
    model = nn.Linear(2, 2, bias=False)  # 4 parameters: the cap is 400
    with pytest.raises(ssnfx.BudgetError) as err:
        ssnfx.share(model, 0.5, ssnfx.ShareConfig(combiner="emb", options={"emb_dim": 200}))
    msg = str(err.value)
    assert "below the least this model can be shared with: 1,005" in msg
    assert "no budget can share this model with these settings" in msg
    assert "'rr', 'avg'" in msg
    ssnfx.share(model, 0.5, ssnfx.ShareConfig(combiner="rr"))  # which works


@pytest.mark.parametrize("budget", [1000.0, 10 ** 9])
def test_budget_above_the_cap(cnn, budget):
    with pytest.raises(ssnfx.BudgetError) as err:
        ssnfx.make_plan(cnn, budget)
    msg = str(err.value)
    assert f"budget {budget!r} is" in msg
    assert f"the most ssnfx accepts is {MAX_BUDGET_RATIO:g}x (1,549,800)" in msg
    assert "was it meant as a fraction" in msg
    assert ssnfx.make_plan(cnn, 1_549_800).shared_params <= 1_549_800  # the cap itself is fine


@pytest.mark.parametrize("model", [nn.ReLU(), nn.Sequential(nn.BatchNorm1d(4, affine=False))])
def test_model_without_parameters(model):
    with pytest.raises(ssnfx.BudgetError) as err:
        ssnfx.share(model, 0.5)
    assert f"{type(model).__name__} has no parameters" in str(err.value)
    assert "pass the model whose parameters should be shared" in str(err.value)


@pytest.mark.parametrize("model,fix", [
    (lambda: nn.Sequential(nn.LayerNorm(4)), ssnfx.ShareConfig(share_norms=True, combiner="rr")),
    (lambda: nn.Sequential(nn.Linear(1, 1), nn.Linear(1, 5)),
     ssnfx.ShareConfig(share_biases=True, combiner="rr")),
])
def test_nothing_shareable(model, fix):
    with pytest.raises(ssnfx.BudgetError) as err:
        ssnfx.share(model(), 0.9)
    msg = str(err.value)
    assert "Sequential has no shareable parameters" in msg
    assert "share_biases/share_norms" in msg and "unfreeze" in msg
    ssnfx.share(model(), 0.9, fix)  # the remedy it names works


def test_private_patterns_can_leave_nothing_to_share(cnn):
    with pytest.raises(ssnfx.BudgetError, match="check ShareConfig.private"):
        ssnfx.make_plan(cnn, 0.5, ssnfx.ShareConfig(private=("*",)))


@pytest.mark.parametrize("groups,message", [
    ([[], ["conv1.weight", "conv2.weight", "conv3.weight", "fc.weight"]],
     "parameter group 0 is empty; remove it"),
    ([["conv1.weight", "conv2.weight", "conv3.weight", "fc.weight", "bn1.weight"]],
     "group member 'bn1.weight' (group 0) is not a shared slot of this model; the shared slots "
     "are ['conv1.weight', 'conv2.weight', 'conv3.weight', 'fc.weight']"),
    ([["conv1.weight", "conv2.weight"], ["conv2.weight", "conv3.weight", "fc.weight"]],
     "slot 'conv2.weight' is in more than one group (again in group 1); put each slot in one"),
    ([["conv1.weight", "conv2.weight"]],
     "shared slots in no group: ['conv3.weight', 'fc.weight']; every shared slot needs a group"),
])
def test_malformed_groups(cnn, groups, message):
    with pytest.raises(ssnfx.PlanError) as err:
        ssnfx.make_plan(cnn, 0.2, groups=groups)
    assert message in str(err.value)


def test_unknown_strategy(cnn):
    with pytest.raises(ssnfx.PlanError, match=re.escape(
            "unknown grouping strategy 'kmeans'; known: "
            "['auto', 'depth', 'random', 'shape', 'single']")):
        ssnfx.make_plan(cnn, 0.2, ssnfx.ShareConfig(strategy="kmeans"))


@pytest.mark.parametrize("layers,strategy", [
    ([(10, 10), (10, 2), (2, 2)], "shape"),   # very unequal groups: the budget was exceeded
    ([(4, 4), (4, 4), (4, 4)], "depth"),      # equal groups: up to a parameter each was lost
])
@pytest.mark.parametrize("budget", [3, 4, 5, 7, 10, 11])
def test_small_budgets_with_several_groups_are_met_exactly(layers, strategy, budget):
    # Found by the property tests: each group's store was floored on its own (at least 1), so a
    # budget of 3 gave 4 parameters over groups of 100, 20 and 4, and a budget of 5 gave 3 over
    # three equal groups (60%). The split is now exact.
    model = nn.Sequential(*[nn.Linear(i, o, bias=False) for i, o in layers])
    config = ssnfx.ShareConfig(strategy=strategy, groups=3, combiner="rr")
    shared = ssnfx.share(model, budget, config)
    assert len(shared.ssnfx.plan.groups) == 3
    assert sum(p.numel() for p in shared.parameters()) == budget


def test_rr_is_round_robin():
    # SSN Sec. 3.1.1: layer i takes candidate i mod |C|. Before, RR read the first of P blocks
    # while the selection advanced P blocks per layer: at budget 1.0 four same-shape convs
    # folded to one weight four times, and 3/4 of the store was never read.
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Conv2d(16, 16, 3, bias=False) for _ in range(4)])
    shared = ssnfx.share(model, 1.0, ssnfx.ShareConfig(method="ssn", combiner="rr"))
    group = shared.ssnfx.plan.groups[0]
    assert group.candidates == 1
    assert select_blocks(group.numel, group.superweights, 1) == [(0, 1), (1, 1), (2, 1), (3, 1)]
    folded = ssnfx.fold(shared)
    w = torch.stack([folded.get_parameter(f"{i}.weight").flatten() for i in range(4)])
    cos = nn.functional.cosine_similarity(w[:, None], w[None], dim=-1)
    assert (cos - torch.eye(4)).abs().max() < 0.2  # four different weights


def test_budget_split_is_a_plan_setting():
    """Largest-first (SWN's code) gives each group its largest SuperWeight before splitting the
    rest by weight; proportional (SSN Sec. 3.2) splits all by weight. Both are exact and
    recorded in the plan."""
    net = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 64),
                        nn.Linear(64, 8))
    gm = ssnfx.trace(net)
    groups = [["0.weight", "1.weight", "2.weight"], ["3.weight"]]
    stores = {}
    for split in ("largest-first", "proportional"):
        plan = ssnfx.make_plan(gm, 0.5, ssnfx.ShareConfig(method="ssn", combiner="avg",
                                                             split=split), groups=groups)
        assert plan.options.split == split
        assert plan.shared_params == plan.budget  # avg has no coefficients: every unit spent
        stores[split] = [g.numel for g in plan.groups]
        assert ssnfx.SharingPlan.from_json(plan.to_json()).options.split == split
    weights = [3 * 64 * 64, 64 * 8]
    total = sum(stores["proportional"])
    # Proportional: shares within one parameter of the weights' proportion...
    for numel, w in zip(stores["proportional"], weights):
        assert abs(numel - total * w / sum(weights)) <= 1
    # ... largest-first: the small group gets its whole 512-parameter layer first.
    assert stores["largest-first"][1] >= 512 > stores["proportional"][1]
    assert sum(stores["largest-first"]) == total
    with pytest.raises(ssnfx.PlanError, match="ShareConfig.split must be one of"):
        ssnfx.ShareConfig(split="even")


def test_complex_parameters_are_refused_with_the_reason():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)).to(torch.complex64)
    with pytest.raises(ssnfx.PlanError, match=r"parameter '0.weight' of Sequential is "
                                              r"torch.complex64: ssnfx cannot share complex"):
        ssnfx.make_plan(ssnfx.trace(model), 0.5)


def test_zero_element_parameters_stay_private():
    """Linear(8, 0) and Linear(0, 4) have 0-element weights (and a 0-element bias): nothing to
    generate, so they stay private, even with share_biases."""
    model = nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 0), nn.Linear(0, 4))
    config = ssnfx.ShareConfig(share_biases=True)
    plan = ssnfx.make_plan(ssnfx.trace(model), 0.5, config)
    assert {s.name for s in plan.slots if s.shared} == {"0.weight", "0.bias", "2.bias"}
    shared = ssnfx.share(model, 0.5, config)
    assert shared(torch.randn(2, 16)).shape == (2, 4)


class FrozenPositions(nn.Module):
    """Marian's layout: a frozen sinusoidal position table beside trained token embeddings."""

    def __init__(self):
        super().__init__()
        self.tokens = nn.Embedding(64, 32)
        self.positions = nn.Embedding(128, 32).requires_grad_(False)
        self.mix = nn.Linear(32, 32)
        self.head = nn.Linear(32, 64, bias=False)
        self.frozen_head = nn.Parameter(torch.randn(32, 32), requires_grad=False)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        h = self.tokens(ids) + self.positions(pos)
        return self.head(torch.relu(self.mix(h)) @ self.frozen_head)


def test_frozen_parameters_stay_frozen_private_and_outside_the_budget():
    model = FrozenPositions()
    frozen = 128 * 32 + 32 * 32
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    shared = ssnfx.share(model, 0.25)
    plan = shared.ssnfx.plan
    assert plan.frozen_params == frozen and plan.trainable_params == trainable
    assert plan.budget == int(0.25 * trainable)  # a fraction of the trainable parameters
    assert sum(p.numel() for p in shared.parameters() if p.requires_grad) <= plan.budget
    assert not shared.get_parameter("positions.weight").requires_grad
    assert not shared.get_parameter("frozen_head").requires_grad
    assert {s.name for s in plan.slots if not s.shared} >= {"positions.weight", "frozen_head"}
    assert ssnfx.SharingPlan.from_json(plan.to_json()) == plan
    assert "frozen (requires_grad=False, outside the budget): 5,120" in ssnfx.report(plan)
    ids = torch.randint(0, 64, (2, 9))
    shared(ids).sum().backward()
    assert shared.get_parameter("positions.weight").grad is None
    folded = ssnfx.fold(shared)
    FrozenPositions().load_state_dict(folded.state_dict())
    torch.testing.assert_close(folded(ids), shared(ids))


def test_a_budget_error_lists_frozen_parameters_apart():
    model = FrozenPositions()
    with pytest.raises(ssnfx.BudgetError) as err:
        ssnfx.share(model, 5)
    msg = str(err.value)
    assert "private parameters (norms, biases" in msg
    assert "The 5,120 frozen parameters are outside the budget" in msg
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ssnfx.BudgetError, match="every parameter of FrozenPositions is frozen"):
        ssnfx.share(model, 0.1)


def test_the_default_method_is_swn_where_the_budget_allows_else_ssn():
    # ShareConfig(method=None): the first method of METHOD_PREFERENCE whose least budget the
    # budget meets (SmallCNN: SSN's least is 267 parameters, SWN's 351).
    gm = ssnfx.trace(SmallCNN())
    assert ssnfx.core.methods.METHOD_PREFERENCE == ("swn", "ssn")
    assert ssnfx.make_plan(gm, 351).method == "swn"
    assert ssnfx.make_plan(gm, 350).method == "ssn"
    with pytest.raises(ssnfx.BudgetError, match="least"):
        ssnfx.make_plan(gm, 350, ssnfx.ShareConfig(method="swn"))  # named: no fallback
    with pytest.raises(ssnfx.BudgetError, match="least this model can be shared with: 267"):
        ssnfx.make_plan(gm, 266)  # below both: SSN's error, the lower least budget
    assert resolve_method(gm, 0.1, ssnfx.ShareConfig()).method == "swn"
    assert resolve_method(gm, 300, ssnfx.ShareConfig(method=None)).method == "ssn"
    # Where SWN's layout is heavy (mobile networks: every layer cut at every other layer's
    # sizes), the default takes SSN; named, SWN still plans.
    mobile = ssnfx.trace(torchvision.models.mobilenet_v3_small())
    swn = ssnfx.make_plan(mobile, 0.1, ssnfx.ShareConfig(method="swn"))
    tiles = sum(len(g.layout[n]) for g in swn.groups for n in g.slots)
    assert tiles > DEFAULT_TILES_PER_SLOT * len(swn.groups[0].slots)
    assert not get_method("swn").suits(swn) and ssnfx.make_plan(mobile, 0.1).method == "ssn"
    assert get_method("swn").suits(ssnfx.make_plan(gm, 0.1))  # SmallCNN: a few tiles a layer
    # The plan records the method used, so a checkpoint loads into the same layout.
    plan = ssnfx.make_plan(gm, 0.1)
    assert ssnfx.SharingPlan.from_json(plan.to_json()).method == "swn"
    assert ssnfx.ShareConfig.from_json(ssnfx.ShareConfig().to_json()).method is None


@pytest.mark.parametrize("budget", [0.3, 0.5, 1.0, 2.0])
def test_auto_strategy_is_one_group_until_the_budget_needs_more_candidates(budget):
    # Eight layers of one shape: SWN's one group mixes as many templates as the store holds
    # SuperWeights (P grows past the configured 4 from about 60% up); auto then bins by depth.
    gm = ssnfx.trace(same_shape_stack())
    auto = ssnfx.make_plan(gm, budget)
    single = ssnfx.make_plan(gm, budget, ssnfx.ShareConfig(strategy="single"))
    assert auto.options.strategy == "auto" and single.options.strategy == "single"
    assert auto.shared_params <= auto.budget == single.budget
    needed = single.groups[0].candidates
    bins = auto_bins(needed, 4)
    slots = [s for s in auto.slots if s.shared]
    assert [g.slots for g in auto.groups] == group_slots(slots, "depth" if bins > 1 else "single",
                                                         bins, 0)
    if bins == 1:
        assert auto.groups == single.groups
    else:
        assert len(auto.groups) == bins > 1 and needed > 4
        assert all(g.candidates < needed for g in auto.groups)


def test_auto_strategy_keeps_one_group_where_the_split_does_not_fit(monkeypatch):
    import ssnfx.passes.planner as planner

    allocate = planner._allocate

    def refuse_splits(plan, target):
        if len(plan.groups) > 1:
            raise ssnfx.BudgetError("no room for bins")
        allocate(plan, target)

    monkeypatch.setattr(planner, "_allocate", refuse_splits)
    plan = ssnfx.make_plan(ssnfx.trace(same_shape_stack()), 1.0)
    assert len(plan.groups) == 1 and plan.groups[0].candidates > 4


def test_auto_strategy_bins_each_member_by_its_own_depth():
    # Members of one store keep sharing every store: bin k holds each member's k-th bin.
    shared = ssnfx.share([same_shape_stack(), same_shape_stack()], 1.0)
    groups = shared.ssnfx.plan.groups
    assert len(groups) > 1
    for g in groups:
        first = [n.removeprefix("0.") for n in g.slots if n.startswith("0.")]
        assert first and g.slots == [f"{m}.{n}" for m in "01" for n in first]
