import copy
import re

import pytest
import torch
import torch.nn as nn
import torchvision

import ssnfx
import ssnfx.core.jit
from ssnfx.core.leaf_call import call_root
from ssnfx.passes.tracing import check_traced_parameters

from models import (
    AttnNet,
    DataDependent,
    FunctionalNet,
    GRUNet,
    KeywordModel,
    SmallCNN,
    TiedInsideLeaf,
    TiedLM,
    TwoNames,
)


def test_inlined_layers_become_get_attr_slots():
    gm = ssnfx.trace(SmallCNN())
    gm.graph.lint()
    slots = {s.name: s for s in ssnfx.passes.slots_of(gm)}
    assert slots["conv1.weight"].kind == "Conv2d" and not slots["conv1.weight"].leaf
    assert slots["fc.weight"].shape == (10, 128) and slots["fc.bias"].role == "bias"
    assert slots["bn1.weight"].leaf and slots["bn1.weight"].kind == "BatchNorm2d"
    reads = [n for n in gm.graph.nodes if n.op == "get_attr"]
    assert {n.target for n in reads} >= {"conv1.weight", "conv2.weight", "fc.weight"}
    positions = [s.position for s in ssnfx.passes.slots_of(gm)]
    assert positions == sorted(positions)


def test_trace_is_exact():
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    gm = ssnfx.trace(model)
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)


def test_tied_weights_are_one_slot_with_aliases():
    slots = ssnfx.passes.slots_of(ssnfx.trace(TiedLM()))
    tied = [s for s in slots if s.shape == (50, 16)]
    assert len(tied) == 1
    assert tied[0].name == "emb.weight" and tied[0].aliases == ("out.weight",)


def test_functional_parameters_are_slots():
    slots = {s.name: s for s in ssnfx.passes.slots_of(ssnfx.trace(FunctionalNet()))}
    assert set(slots) == {"w1", "b1", "w2", "scale"}
    assert slots["w1"].kind == "Parameter" and slots["scale"].shape == ()


@pytest.mark.parametrize("net,leaf,kind", [(AttnNet, "attn", "MultiheadAttention"),
                                           (GRUNet, "rnn", "GRU")])
def test_untraceable_layers_stay_leaves(net, leaf, kind):
    gm = ssnfx.trace(net())
    assert any(n.op == "call_module" and n.target == leaf for n in gm.graph.nodes)
    leaf_slots = [s for s in ssnfx.passes.slots_of(gm) if s.leaf and s.kind == kind]
    assert leaf_slots and all(s.name.startswith(leaf + ".") for s in leaf_slots)


def test_untraceable_model_names_module_line_and_remedy():
    with pytest.raises(ssnfx.TraceError) as err:
        ssnfx.trace(DataDependent(), auto_leaves=False)
    msg = str(err.value)
    assert "'gate' (Gate)" in msg
    assert "models.py" in msg and "if x.sum() > 0" in msg
    assert "register_leaf(Gate)" in msg and "concrete_args" in msg


def test_leaf_modules_argument_and_register_leaf():
    gm = ssnfx.trace(DataDependent(), leaf_modules=["gate"])
    assert [s.name for s in ssnfx.passes.slots_of(gm) if s.leaf] == ["gate.w"]

    @ssnfx.passes.register_leaf
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
    slots = {s.name: s for s in ssnfx.passes.slots_of(gm)}
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


def test_untraceable_module_becomes_a_leaf_with_its_reason():
    model = DataDependent()
    gm = ssnfx.trace(model)
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == ["gate"]
    reason = gm.meta["ssnfx_trace"]["auto_leaves"]["gate"]
    assert "models.py" in reason and "if x.sum() > 0" in reason
    assert [s.name for s in ssnfx.passes.slots_of(gm) if s.leaf] == ["gate.w"]
    for x in (torch.ones(3, 4), -torch.ones(3, 4)):  # both branches, as the model takes them
        torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)


def test_untraceable_forward_makes_the_model_one_leaf_call():
    model = TiedInsideLeaf()
    gm = ssnfx.trace(model)
    assert set(gm.meta["ssnfx_trace"]["auto_leaves"]) == {""}
    assert [n.op for n in gm.graph.nodes].count("call_module") == 0
    tokens = torch.randint(0, 40, (2, 5))
    torch.testing.assert_close(gm(tokens), model(tokens), rtol=0, atol=0)
    # The model's own names, its tied weight one slot with both names.
    slots = {s.name: s for s in ssnfx.passes.slots_of(gm)}
    assert slots["encoder.emb.weight"].aliases == ("head.weight",)
    assert set(gm.state_dict()) == set(model.state_dict())


@pytest.mark.parametrize("leaves", [[""], None])
def test_the_model_itself_as_a_leaf(leaves):
    if leaves is None:
        cls = type("Registered", (SmallCNN,), {})
        ssnfx.passes.register_leaf(cls)
        model, leaves = cls(), []
    else:
        model = SmallCNN()
    gm = ssnfx.trace(model, leaf_modules=leaves)
    assert any(n.target is call_root for n in gm.graph.nodes)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)


def test_optional_inputs_used_by_the_trace_make_the_model_a_leaf():
    model = KeywordModel()
    gm = ssnfx.trace(model)
    assert "optional input(s) ['attention_mask', 'labels']" in \
        gm.meta["ssnfx_trace"]["auto_leaves"][""]
    ids = torch.randint(0, 30, (2, 5))
    for kwargs in ({}, {"attention_mask": torch.ones(2, 5)}, {"labels": ids}):
        torch.testing.assert_close(gm(ids, **kwargs), model(ids, **kwargs), rtol=0, atol=0)
        torch.testing.assert_close(gm(input_ids=ids, **kwargs), model(ids, **kwargs))


def test_concrete_args_are_recorded():
    gm = ssnfx.trace(KeywordModel(), concrete_args={"attention_mask": None, "labels": None})
    assert gm.meta["ssnfx_trace"]["auto_leaves"] == {}
    assert gm.meta["ssnfx_trace"]["concrete_args"] == {"attention_mask": None, "labels": None}


def test_auto_leaves_off_raises_the_first_failure():
    with pytest.raises(ssnfx.TraceError, match=r"module 'encoder' \(BranchyEncoder\) at .*"
                                               r"models.py:\d+ \(return torch.tanh"):
        ssnfx.trace(TiedInsideLeaf(), auto_leaves=False)
    with pytest.raises(ssnfx.TraceError, match=r"the model's forward \(TiedInsideLeaf\) at .*"
                                               r"models.py:\d+ \(return self.head"):
        ssnfx.trace(TiedInsideLeaf(), leaf_modules=["encoder"], auto_leaves=False)


def test_a_graph_module_from_torch_fx_is_used_as_it_is():
    model = SmallCNN()
    traced = torch.fx.symbolic_trace(model)
    gm = ssnfx.trace(traced)
    assert gm.code == traced.code  # not traced again: its Linear and Conv stay call_module
    names = {s.name for s in ssnfx.passes.slots_of(gm)}
    assert names == {n for n, _ in model.named_parameters()}
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)


def test_non_persistent_buffers_stay_non_persistent():
    model = KeywordModel()
    gm = ssnfx.trace(model, concrete_args={"attention_mask": None, "labels": None})
    assert "unused_cache" not in gm.state_dict()
    assert set(gm.state_dict()) == set(model.state_dict())


def _hooked(model):
    """``model`` with a forward, a pre-forward and their with_kwargs forms on itself."""
    model.register_forward_pre_hook(lambda mod, args: (args[0] * 2,))
    model.register_forward_pre_hook(lambda mod, args, kwargs: ((args[0] + 1,), kwargs),
                                    with_kwargs=True)
    model.register_forward_hook(lambda mod, args, out: out + 100)
    model.register_forward_hook(lambda mod, args, kwargs, out: out * 3, with_kwargs=True)
    return model


@pytest.mark.parametrize("generation", ssnfx.core.jit.GENERATIONS)
def test_hooks_on_the_model_itself_keep_running(generation):
    """torch.fx traces the root's forward, not its __call__: the hooks are carried over to
    every GraphModule built from the trace, and survive fold and deepcopy."""
    def net():
        return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    model = _hooked(net())
    grads = []
    model.register_full_backward_hook(lambda mod, grad_in, grad_out: grads.append(grad_out))
    shared = ssnfx.share(model, 0.5, ssnfx.ShareConfig(generation=generation))
    folded = ssnfx.fold(shared)
    # The same weights in the user's class with the same hooks: what the shared model must give.
    reference = _hooked(net())
    reference.load_state_dict(folded.state_dict())
    x = torch.randn(3, 8)
    expected = reference(x)
    assert float(expected.abs().min()) > 50  # the hooks do change the output
    for m in (shared, folded, copy.deepcopy(shared), copy.deepcopy(folded)):
        torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-5)
    shared(x).sum().backward()
    assert len(grads) == 1 and torch.equal(grads[0][0], torch.ones(3, 2))


def test_a_model_called_as_one_leaf_runs_its_hooks_once():
    net = torch.nn.Linear(4, 4)
    calls = []
    net.register_forward_hook(lambda mod, args, out: calls.append(1))
    shared = ssnfx.share(net, 2.0, ssnfx.ShareConfig(leaf_modules=("",)))
    shared(torch.randn(2, 4))
    assert len(calls) == 1


def test_a_torchscript_module_is_refused_with_what_to_do():
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(8, 8)))
    with pytest.raises(ssnfx.TraceError, match="Sequential is a TorchScript module .* script "
                                               "after folding, not before"):
        ssnfx.share(scripted, 0.5)
