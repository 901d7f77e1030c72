import re

import pytest
import torch
import torch.nn as nn
import torchvision

import ssnfx
from ssnfx.passes.trace import check_traced_parameters

from models import AttnNet, DataDependent, FunctionalNet, GRUNet, SmallCNN, TiedLM, TwoNames


def test_inlined_layers_become_get_attr_slots():
    gm = ssnfx.trace(SmallCNN())
    gm.graph.lint()
    slots = {s.name: s for s in ssnfx.slots_of(gm)}
    assert slots["conv1.weight"].kind == "Conv2d" and not slots["conv1.weight"].leaf
    assert slots["fc.weight"].shape == (10, 128) and slots["fc.bias"].role == "bias"
    assert slots["bn1.weight"].leaf and slots["bn1.weight"].kind == "BatchNorm2d"
    reads = [n for n in gm.graph.nodes if n.op == "get_attr"]
    assert {n.target for n in reads} >= {"conv1.weight", "conv2.weight", "fc.weight"}
    positions = [s.position for s in ssnfx.slots_of(gm)]
    assert positions == sorted(positions)


def test_trace_is_exact():
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    gm = ssnfx.trace(model)
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)


def test_tied_weights_are_one_slot_with_aliases():
    slots = ssnfx.slots_of(ssnfx.trace(TiedLM()))
    tied = [s for s in slots if s.shape == (50, 16)]
    assert len(tied) == 1
    assert tied[0].name == "emb.weight" and tied[0].aliases == ("out.weight",)


def test_functional_parameters_are_slots():
    slots = {s.name: s for s in ssnfx.slots_of(ssnfx.trace(FunctionalNet()))}
    assert set(slots) == {"w1", "b1", "w2", "scale"}
    assert slots["w1"].kind == "Parameter" and slots["scale"].shape == ()


@pytest.mark.parametrize("net,leaf,kind", [(AttnNet, "attn", "MultiheadAttention"),
                                           (GRUNet, "rnn", "GRU")])
def test_untraceable_layers_stay_leaves(net, leaf, kind):
    gm = ssnfx.trace(net())
    assert any(n.op == "call_module" and n.target == leaf for n in gm.graph.nodes)
    leaf_slots = [s for s in ssnfx.slots_of(gm) if s.leaf and s.kind == kind]
    assert leaf_slots and all(s.name.startswith(leaf + ".") for s in leaf_slots)


def test_untraceable_model_names_module_line_and_remedy():
    with pytest.raises(ssnfx.TraceError) as err:
        ssnfx.trace(DataDependent())
    msg = str(err.value)
    assert "'gate' (Gate)" in msg
    assert "models.py" in msg and "if x.sum() > 0" in msg
    assert "register_leaf(Gate)" in msg and "concrete_args" in msg


def test_leaf_modules_argument_and_register_leaf():
    gm = ssnfx.trace(DataDependent(), leaf_modules=["gate"])
    assert [s.name for s in ssnfx.slots_of(gm) if s.leaf] == ["gate.w"]

    @ssnfx.register_leaf
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 3))

        def forward(self, x):
            return x @ self.w if x.mean() > 0 else x

    gm = ssnfx.trace(nn.Sequential(nn.Linear(3, 3), Branchy()))
    assert [n.op for n in gm.graph.nodes].count("call_module") == 1


def test_unknown_leaf_name_is_an_error():
    with pytest.raises(ssnfx.TraceError, match="'nope', which is not a submodule"):
        ssnfx.trace(SmallCNN(), leaf_modules=["nope"])


def test_unread_parameters_are_recorded():
    model = SmallCNN()
    model.spare = nn.Linear(2, 2)  # never called in forward
    gm = ssnfx.trace(model)
    assert {"spare.weight", "spare.bias"} <= set(gm.meta["ssnfx_unread"])


def test_not_a_module():
    with pytest.raises(TypeError, match="nn.Module"):
        ssnfx.trace(lambda x: x)


def test_leaf_named_twice_is_harmless():
    once = ssnfx.trace(SmallCNN(), leaf_modules=["conv1"])
    twice = ssnfx.trace(SmallCNN(), leaf_modules=["conv1", "conv1"])
    assert twice.code == once.code
    assert twice.meta["ssnfx_trace"]["leaf_modules"] == ["conv1"]


@pytest.mark.parametrize("leaves", [["a"], ["b"], ["a", "b"]])
def test_module_under_two_names_is_a_leaf_by_either_name(leaves):
    # torch.fx knows a module by its first name; the second name used to be "not a submodule".
    gm = ssnfx.trace(TwoNames(), leaf_modules=leaves)
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == ["a", "a"]
    slots = {s.name: s for s in ssnfx.slots_of(gm)}
    assert slots["a.weight"].leaf and slots["a.weight"].aliases == ("b.weight",)


def test_leaf_modules_given_as_a_string():
    with pytest.raises(ssnfx.TraceError, match=re.escape(
            "leaf_modules must be a list of module names, got the string 'gate'; write "
            "leaf_modules=['gate']")):
        ssnfx.trace(DataDependent(), leaf_modules="gate")


def test_unknown_leaf_name_suggests_the_close_ones():
    with pytest.raises(ssnfx.TraceError) as err:
        ssnfx.trace(SmallCNN(), leaf_modules=["conv"])
    msg = str(err.value)
    assert "leaf_modules names 'conv', which is not a submodule of SmallCNN" in msg
    assert "qualified names as in model.named_modules()" in msg and "'conv1'" in msg


def test_traced_parameters_are_recorded_and_checked():
    model = SmallCNN()
    gm = ssnfx.trace(model)
    assert gm.meta["ssnfx_params"]["fc.weight"] is model.fc.weight
    check_traced_parameters(gm)  # unchanged: passes
    gm.fc.weight = nn.Parameter(torch.zeros(10, 128))
    with pytest.raises(ssnfx.PlanError, match="parameter 'fc.weight' of SmallCNN was replaced"):
        check_traced_parameters(gm)
