import copy
import math

import pytest
import torch
import torchvision

import ssnfx
import ssnfx.core.config

from helpers import check_pipeline, count_params
from models import (
    AttnNet,
    FunctionalNet,
    GRUNet,
    KeywordModel,
    LSTMNet,
    SmallCNN,
    TiedAcrossLeaf,
    TiedInsideLeaf,
    TiedLM,
    TwoNames,
    same_shape_stack,
)

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


@pytest.mark.parametrize("generation", ["batched", "auto"])
def test_generators_run_first_once_per_group(resnet18, generation):
    gm = ssnfx.trace(resnet18)
    shared = ssnfx.rewrite(gm, ssnfx.make_plan(gm, 0.1, ssnfx.ShareConfig(generation=generation)))
    calls = [n for n in shared.graph.nodes
             if n.op == "call_module" and n.target.startswith("ssnfx.")]
    assert [n.target for n in calls] == [f"ssnfx.{g.name}" for g in shared.ssnfx.plan.groups]
    real = [n for n in shared.graph.nodes if n.op not in ("placeholder", "get_attr")]
    # (auto: the step of the weights made just in time, then the batched ones: resnet18's
    # layer3 and layer4 convolutions are 0.6-2.4M elements, its others smaller)
    first = [ssnfx.core.jit.begin, "ssnfx.g0"] if generation == "auto" else ["ssnfx.g0"]
    assert [n.target for n in real[:len(first)]] == first


@pytest.mark.parametrize("method", ["ssn", "swn"])
@pytest.mark.parametrize("combiner", ssnfx.core.config.COMBINERS)
def test_every_combiner_and_method(method, combiner):
    check_pipeline(SmallCNN(), (torch.randn(3, 1, 8, 8),), budget=0.2,
                   config=ssnfx.ShareConfig(method=method, combiner=combiner))


@pytest.mark.parametrize("strategy", ["auto", "single", "depth", "shape", "random"])
def test_every_data_free_strategy(resnet18, strategy):
    check_pipeline(resnet18, X_IMG, budget=0.05, config=ssnfx.ShareConfig(strategy=strategy))


def test_auto_strategy_split_into_depth_bins():
    # At 100%, eight layers of one shape need 8 candidates in one group: auto makes 2 bins.
    shared, _ = check_pipeline(same_shape_stack(), (torch.randn(4, 32),), budget=1.0)
    assert len(shared.ssnfx.plan.groups) == 2


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


def test_deepcopy_and_train_eval():
    shared = ssnfx.share(SmallCNN(), 0.2)
    clone = copy.deepcopy(shared)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(clone.eval()(x), shared.eval()(x))
    assert clone.ssnfx.plan == shared.ssnfx.plan
    assert math.isclose(count_params(clone), count_params(shared))


def _replace_after_tracing(model, gm, how):
    """Change a parameter after tracing; returns its name and what the message should show."""
    if how == "same shape":
        gm.inp.weight = torch.nn.Parameter(torch.randn(16, 8))
        return "inp.weight", "replaced (traced with shape (16, 8), now Parameter of shape (16, 8))"
    if how == "other shape":
        gm.inp.weight = torch.nn.Parameter(torch.randn(16, 9))
        return "inp.weight", "replaced (traced with shape (16, 8), now Parameter of shape (16, 9))"
    if how == "deleted":
        del gm.head.weight
        return "head.weight", "deleted"
    # A leaf module is the model's own object in the GraphModule: changing the model changes it.
    model.attn.in_proj_weight = torch.nn.Parameter(torch.randn(48, 16))
    return "attn.in_proj_weight", "replaced"


@pytest.mark.parametrize("how", ["same shape", "other shape", "deleted", "leaf, via the model"])
@pytest.mark.parametrize("step", ["make_plan", "rewrite"])
def test_parameter_replaced_after_tracing_is_refused(how, step):
    model = AttnNet()
    gm = ssnfx.trace(model)
    plan = ssnfx.make_plan(gm, 0.5)
    name, what = _replace_after_tracing(model, gm, how)
    with pytest.raises(ssnfx.PlanError) as err:
        ssnfx.make_plan(gm, 0.5) if step == "make_plan" else ssnfx.rewrite(gm, plan)
    msg = str(err.value)
    assert f"parameter {name!r} of AttnNet was {what}" in msg and "after ssnfx.trace" in msg
    assert "trace the model again (ssnfx.trace(model))" in msg
    if how == "leaf, via the model":  # the remedy works
        again = ssnfx.trace(model)
        ssnfx.rewrite(again, ssnfx.make_plan(again, 0.5))


class _UsesStoreName(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ssnfx = torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.ssnfx(x)


class _KeepsStoreName(torch.nn.Module):
    """An attribute named like the store that forward never reads."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
        self.ssnfx = torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(x)


class _AliasesStoreName(torch.nn.Module):
    """The store's name as the second name of a used module."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
        self.ssnfx = self.fc

    def forward(self, x):
        return self.fc(x)


@pytest.mark.parametrize("net,clash", [(_UsesStoreName, "ssnfx.weight"),
                                       (_KeepsStoreName, "ssnfx.weight"),
                                       (_AliasesStoreName, "ssnfx.weight")])
def test_model_with_an_attribute_named_like_the_store(net, clash):
    # Before: the unused and the aliased attributes were merged into the store silently, and
    # the folded state_dict then lacked their keys.
    with pytest.raises(ssnfx.PlanError) as err:
        ssnfx.share(net(), 0.8)
    msg = str(err.value)
    assert f"the model already has an attribute 'ssnfx' ({clash!r})" in msg
    assert "rename that attribute of the model" in msg


def test_sharing_a_shared_model_again():
    shared = ssnfx.share(SmallCNN(), 0.2)
    with pytest.raises(ssnfx.TraceError, match="SmallCNN is shared already .* ssnfx.fold it"):
        ssnfx.share(shared, 0.2)
    with pytest.raises(ssnfx.PlanError, match="already has an attribute 'ssnfx'.* shared already"):
        ssnfx.rewrite(shared, shared.ssnfx.plan)
    ssnfx.share(ssnfx.fold(shared), 0.2)  # the remedy works


@pytest.mark.parametrize("config", [ssnfx.ShareConfig(), ssnfx.ShareConfig(share_biases=True),
                                    ssnfx.ShareConfig(leaf_modules=("b",))])
def test_module_registered_under_two_names(config):
    # Its parameters are tied: one slot each, the second name an alias; folding restores both
    # names, private ones too (the bias was missing under b before), so the state_dict loads
    # strictly into the model.
    shared, folded = check_pipeline(TwoNames(), (torch.randn(3, 6),), 0.7, config)
    slots = {s.name: s for s in shared.ssnfx.plan.slots}
    assert slots["a.weight"].aliases == ("b.weight",) and slots["a.bias"].aliases == ("b.bias",)
    assert "b.weight" not in slots and slots["a.weight"].shared
    assert slots["a.weight"].leaf == bool(config.leaf_modules)
    sd = folded.state_dict(keep_vars=True)
    assert sd["a.weight"] is sd["b.weight"] and sd["a.bias"] is sd["b.bias"]


@pytest.mark.parametrize("net", [TiedAcrossLeaf, TiedInsideLeaf])
def test_a_weight_tied_across_or_inside_a_leaf_is_one_generated_weight(net, tmp_path):
    # Before: the leaf kept a private copy (budget blown, the tie broken in training, fold
    # disagreeing, junk keys), or the second use inside the leaf got None.
    model = net()
    tokens = torch.randint(0, 40, (3, 7))
    shared, folded = check_pipeline(model, (tokens,), 0.5, backward=True,
                                    checkpoint=tmp_path / "c.pt")
    assert set(shared.state_dict()) - {k for k in shared.state_dict() if k.startswith("ssnfx.")} \
        == {"encoder.mix.bias"}
    sd = folded.state_dict(keep_vars=True)
    tied = "output_projection.weight" if net is TiedAcrossLeaf else "head.weight"
    assert sd[tied] is sd["encoder.emb.weight"]
    assert set(sd) == set(model.state_dict())
    assert ("encoder: torch.fx cannot trace it" if net is TiedAcrossLeaf
            else "(the model itself): torch.fx cannot trace it") in ssnfx.report(shared)


def test_keyword_inputs_and_dict_outputs(tmp_path):
    model = KeywordModel()
    ids = torch.randint(0, 30, (2, 5))
    kwargs = {"input_ids": ids, "attention_mask": torch.ones(2, 5), "labels": ids}
    shared, _ = check_pipeline(model, (), 0.5, backward=True, kwargs=kwargs,
                               checkpoint=tmp_path / "k.pt")
    shared.train()
    shared(**kwargs)["loss"].backward()
    assert shared.ssnfx.g0.store.grad is not None
    assert "logits" in shared(ids) and "loss" not in shared(ids)  # optional inputs stay optional
