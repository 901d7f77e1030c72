import copy
import math

import pytest
import torch
import torchvision

import ssnfx

from helpers import check_pipeline, count_params
from models import AttnNet, FunctionalNet, GRUNet, LSTMNet, SmallCNN, TiedLM

X_IMG = (torch.randn(2, 3, 64, 64),)


@pytest.fixture(scope="module")
def resnet18():
    return torchvision.models.resnet18()


@pytest.mark.parametrize("budget", [0.01, 0.1, 1.0, 2.0, 4.0])
def test_budgets_are_met(resnet18, budget):
    shared, _ = check_pipeline(resnet18, X_IMG, budget=budget)
    n = count_params(shared)
    target = math.floor(budget * 11_689_512)
    assert 0.95 * target <= n <= target


def test_absolute_budget(resnet18):
    shared = ssnfx.share(resnet18, budget=500_000)
    assert 475_000 <= count_params(shared) <= 500_000


@pytest.mark.parametrize("budget,match", [
    (0, "positive"), (-0.5, "finite fraction > 0"), (float("nan"), "finite"),
    (float("inf"), "finite"), ("0.1", "float .* or an int"), (True, "float .* or an int"),
    (0.0005, "below the least"), (1000.0, "the most ssnfx accepts")])
def test_impossible_budgets(resnet18, budget, match):
    with pytest.raises(ssnfx.BudgetError, match=match):
        ssnfx.share(resnet18, budget=budget)


def test_least_budget_is_reported(resnet18):
    with pytest.raises(ssnfx.BudgetError) as err:
        ssnfx.share(resnet18, budget=0.0005)
    assert "9,600 private parameters" in str(err.value) or "private parameters" in str(err.value)


def test_input_model_is_not_modified(resnet18):
    before = {k: v.clone() for k, v in resnet18.state_dict().items()}
    params = [id(p) for p in resnet18.parameters()]
    shared = ssnfx.share(resnet18, 0.1)
    shared(X_IMG[0]).sum().backward()
    assert [id(p) for p in resnet18.parameters()] == params
    for k, v in resnet18.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_shared_parameters_are_deleted(resnet18):
    shared = ssnfx.share(resnet18, 0.1)
    names = set(shared.state_dict())
    plan = shared.ssnfx.plan
    for s in plan.slots:
        assert (s.name in names) == (not s.shared), s.name
    assert count_params(shared) == plan.shared_params


def test_generators_run_first_once_per_group(resnet18):
    shared = ssnfx.share(resnet18, 0.1)
    calls = [n for n in shared.graph.nodes
             if n.op == "call_module" and n.target.startswith("ssnfx.")]
    assert [n.target for n in calls] == [f"ssnfx.{g.name}" for g in shared.ssnfx.plan.groups]
    first_real = next(n for n in shared.graph.nodes if n.op != "placeholder")
    assert first_real is calls[0]


@pytest.mark.parametrize("method", ["ssn", "swn"])
@pytest.mark.parametrize("combiner", ssnfx.COMBINERS)
def test_every_combiner_and_method(method, combiner):
    check_pipeline(SmallCNN(), (torch.randn(3, 1, 8, 8),), budget=0.2,
                   config=ssnfx.ShareConfig(method=method, combiner=combiner))


@pytest.mark.parametrize("strategy", ["single", "depth", "shape", "random"])
def test_every_data_free_strategy(resnet18, strategy):
    check_pipeline(resnet18, X_IMG, budget=0.05, config=ssnfx.ShareConfig(strategy=strategy))


def test_tied_weights_generated_once_and_stay_tied():
    model = TiedLM()
    tokens = torch.randint(0, 50, (2, 7))
    shared, folded = check_pipeline(model, (tokens,), budget=0.5)
    assert [s.name for s in shared.ssnfx.plan.slots if s.aliases] == ["emb.weight"]
    sd = folded.state_dict(keep_vars=True)
    assert sd["emb.weight"] is sd["out.weight"]


def test_functional_parameters():
    shared, _ = check_pipeline(FunctionalNet(), (torch.randn(5, 12),), budget=0.5)
    shared(torch.randn(5, 12)).sum().backward()
    assert shared.ssnfx.g0.store.grad is not None


@pytest.mark.parametrize("net,x", [(AttnNet, torch.randn(2, 5, 8)), (GRUNet, torch.randn(2, 5, 8)),
                                   (LSTMNet, torch.randn(3, 4, 6))])
def test_leaf_modules_receive_generated_weights(net, x):
    shared, _ = check_pipeline(net(), (x,), budget=0.3)
    leaf = [s for s in shared.ssnfx.plan.slots if s.leaf and s.shared]
    assert leaf
    shared.train()
    shared(x).square().sum().backward()
    assert all(g.store.grad.abs().sum() > 0 for g in shared.ssnfx.children())
    # the leaf's own copy holds only its private parameters
    owner = leaf[0].name.split(".")[0]
    assert all(p.dim() == 1 for p in shared.get_submodule(owner).parameters())


def test_unread_parameters_survive():
    model = SmallCNN()
    model.spare = torch.nn.Linear(3, 3)
    shared, folded = check_pipeline(model, (torch.randn(2, 1, 8, 8),), budget=0.3)
    assert torch.equal(shared.spare.weight, model.spare.weight)
    assert "spare.weight" in folded.state_dict()


def test_rewrite_refuses_a_plan_for_another_model(resnet18):
    plan = ssnfx.make_plan(ssnfx.trace(SmallCNN()), 0.2)
    with pytest.raises(ssnfx.PlanError, match="another model"):
        ssnfx.rewrite(ssnfx.trace(resnet18), plan)


def test_no_shareable_parameters():
    with pytest.raises(ssnfx.BudgetError, match="no shareable parameters"):
        ssnfx.share(torch.nn.Sequential(torch.nn.LayerNorm(4)), 0.5)
    with pytest.raises(ssnfx.BudgetError, match="no parameters"):
        ssnfx.share(torch.nn.ReLU(), 0.5)


def test_deepcopy_and_train_eval():
    shared = ssnfx.share(SmallCNN(), 0.2)
    clone = copy.deepcopy(shared)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(clone.eval()(x), shared.eval()(x))
    assert clone.ssnfx.plan == shared.ssnfx.plan
    assert math.isclose(count_params(clone), count_params(shared))
