import pytest
import torch
import torch.nn as nn

import ssnfx
from ssnfx.anytime import (
    anytime_frontier,
    anytime_subset,
    member_costs,
    order_by_cost,
    subset_accuracy,
)

from models import SmallCNN

COSTS = {"large": 4.0, "small": 1.0, "medium": 2.0}


def test_members_are_ordered_by_cost_and_the_cheapest_prefix_that_fits_is_run():
    assert order_by_cost(COSTS) == ["small", "medium", "large"]
    assert anytime_subset(COSTS, 1.0) == ("small",)
    assert anytime_subset(COSTS, 2.9) == ("small",)
    assert anytime_subset(COSTS, 3.0) == ("small", "medium")
    assert anytime_subset(COSTS, 100.0) == ("small", "medium", "large")


def test_with_scores_the_best_subset_that_fits_is_run_cheaper_on_ties():
    scores = {("small",): 0.80, ("medium",): 0.82, ("large",): 0.86,
              ("small", "medium"): 0.84, ("small", "large"): 0.88, ("medium", "large"): 0.88,
              ("large", "medium", "small"): 0.89}  # any order of names within a subset
    assert anytime_subset(COSTS, 3.0, scores) == ("small", "medium")
    assert anytime_subset(COSTS, 4.5, scores) == ("large",)
    assert anytime_subset(COSTS, 6.5, scores) == ("small", "large")  # tie: cheaper
    assert anytime_subset(COSTS, 7.0, scores) == ("small", "medium", "large")


def test_a_budget_below_the_cheapest_member_is_refused_with_its_cost():
    with pytest.raises(ssnfx.EnsembleError, match="cheapest, 'small', costs 1"):
        anytime_subset(COSTS, 0.5)
    with pytest.raises(ssnfx.EnsembleError, match="single members too"):
        anytime_subset(COSTS, 3.0, {("small", "medium", "large"): 0.9})


def test_the_frontier_gets_more_accurate_as_it_gets_slower():
    logits = {n: torch.randn(200, 5) for n in COSTS}
    y = torch.randint(0, 5, (200,))
    scores = subset_accuracy(logits, y)
    assert len(scores) == 7
    for subset, acc in scores.items():
        probs = torch.stack([logits[n].softmax(1) for n in subset]).mean(0)
        assert acc == pytest.approx(float((probs.argmax(1) == y).float().mean()))
    front = anytime_frontier(COSTS, scores)
    costs = [c for _, c, _ in front]
    accs = [a for _, _, a in front]
    assert costs == sorted(costs) and accs == sorted(accs) and len(set(accs)) == len(accs)
    best = max(scores.values())
    assert accs[-1] == best
    # Every subset is dominated by a frontier entry at most as costly.
    for subset, acc in scores.items():
        cost = sum(COSTS[n] for n in subset)
        assert any(c <= cost and a >= acc for _, c, a in front)


def test_member_costs_time_each_folded_member_alone():
    torch.manual_seed(0)
    members = {"mlp": nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), "cnn": SmallCNN(16)}
    folded = ssnfx.fold(ssnfx.share(members, budget=0.5))
    costs = member_costs(folded, torch.randn(64, 1, 8, 8), repeats=5)
    assert list(costs) == ["mlp", "cnn"] and all(c > 0 for c in costs.values())
    assert list(member_costs(folded, torch.randn(2, 1, 8, 8), ["cnn"], repeats=1)) == ["cnn"]
    with pytest.raises(ssnfx.EnsembleError, match="not a model of several members"):
        member_costs(ssnfx.fold(ssnfx.share(SmallCNN(4), 0.5)), torch.randn(1, 1, 8, 8))
