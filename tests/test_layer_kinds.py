"""Layer kinds: each registered kind's fan-in, default std and private init agree with PyTorch's
own init of a freshly built layer; a kind defined and registered here, for a module class
defined here, is what share, initialize and the leaf call use."""
from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ssnfx
from ssnfx.core.initialization import initialize
from ssnfx.core.layer_kinds import (
    DEFAULT_KIND,
    LAYER_KINDS,
    LayerKind,
    kind_of,
    register_layer_kind,
)


def _layers() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "Linear": nn.Linear(300, 200),
        "Conv": nn.Conv2d(32, 64, 3),
        "ConvTranspose": nn.ConvTranspose2d(32, 16, 3, groups=2),
        "Bilinear": nn.Bilinear(40, 50, 30),
        "Embedding": nn.Embedding(1000, 64),
        "RNN": nn.RNN(64, 96),
        "GRU": nn.GRU(64, 96),
        "LSTM": nn.LSTM(64, 128),
        "MultiheadAttention": nn.MultiheadAttention(128, 4, add_bias_kv=True),
    }


def _slots(layer: nn.Module) -> dict[str, ssnfx.Slot]:
    """The slots the trace records for ``layer`` as the child ``layer`` of a model."""
    return {f"layer.{n}": ssnfx.Slot(f"layer.{n}", tuple(p.shape), n.rpartition(".")[2],
                                     type(layer).__name__, 0)
            for n, p in layer.named_parameters()}


def _close(measured: float, expected: float, n: int) -> bool:
    # Six standard errors of a sample std of n draws (uniform or normal: at most 1/sqrt(2n)).
    return abs(measured - expected) <= 6 * expected / math.sqrt(2 * n)


def test_every_layer_is_found_by_class_and_by_name():
    for name, layer in _layers().items():
        kind = kind_of(layer)
        assert kind is not DEFAULT_KIND and kind is kind_of(type(layer).__name__), name
    assert kind_of("LlamaRMSNorm").is_norm and kind_of(nn.GroupNorm(2, 4)).is_norm
    assert kind_of(nn.RMSNorm(4)).is_norm and not kind_of(nn.Linear(2, 2)).is_norm
    assert kind_of("TokenEmbedding") is LAYER_KINDS["Embedding"]
    assert kind_of("Conv1D") is DEFAULT_KIND  # Hugging Face's transposed linear layer


def test_fan_in_is_pytorchs():
    layers = _layers()
    for name in ("Linear", "Conv", "ConvTranspose"):
        w = layers[name].weight
        assert kind_of(layers[name]).fan_in(tuple(w.shape)) == \
            nn.init._calculate_fan_in_and_fan_out(w)[0], name
    # Bilinear draws weight and bias from U(+-1/sqrt(in1_features)).
    assert kind_of(layers["Bilinear"]).fan_in((30, 40, 50)) == 40
    assert kind_of("Bilinear").fan_in((30,)) == 1 == DEFAULT_KIND.fan_in((30,))


@pytest.mark.parametrize("name", list(_layers()))
def test_default_std_is_the_std_of_pytorchs_init(name):
    """Every matrix (what is shared by default) of a fresh layer has the std its kind says."""
    layer = _layers()[name]
    kind = kind_of(layer)
    checked = 0
    for slot_name, slot in _slots(layer).items():
        p = layer.get_parameter(slot_name[len("layer."):])
        if sum(d > 1 for d in p.shape) < 2:
            continue
        measured = p.detach().std().item()
        assert _close(measured, kind.default_std(slot), p.numel()), (slot_name, measured)
        checked += 1
    assert checked


@pytest.mark.parametrize("name", list(_layers()))
def test_init_private_draws_as_pytorch_does(name):
    """init_private fills each parameter of a fresh layer from the distribution the layer's own
    init draws it from: the same std (zeros where PyTorch zeroes) and range."""
    layer = _layers()[name]
    model = nn.Module()
    model.layer = layer
    slots = _slots(layer)
    for slot_name, slot in slots.items():
        p = layer.get_parameter(slot_name[len("layer."):]).detach()
        t = torch.full_like(p, float("nan"))
        with torch.no_grad():
            assert kind_of(slot).init_private(t, slot, model, slots), slot_name
        assert torch.isfinite(t).all(), slot_name
        if torch.all(p == 0):
            assert torch.all(t == 0), slot_name
            continue
        assert _close(t.std().item(), p.std().item(), p.numel()), slot_name
        assert t.abs().max() <= 1.01 * max(p.abs().max(), 6 * p.std()), slot_name


def test_the_parameter_kind_has_no_init():
    slot = ssnfx.Slot("w", (4, 4), "w", "Parameter", 0)
    t = torch.zeros(4, 4)
    assert not kind_of(slot).init_private(t, slot, nn.Module(), {"w": slot})
    assert torch.all(t == 0)


# ---- a kind of one's own -------------------------------------------------------------------------


class Scaled(nn.Module):
    """A linear layer of its own (not an nn.Linear) that starts small, its bias at 0.5."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in).normal_(0, 0.02))
        self.bias = nn.Parameter(torch.full((n_out,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * F.linear(x, self.weight, self.bias)


class ScaledKind(LayerKind):
    name = "Scaled"
    classes = (Scaled,)

    def __init__(self) -> None:
        self.refreshed = 0

    def default_std(self, slot: ssnfx.Slot) -> float:
        return 0.02

    def init_private(self, tensor, slot, model, slots) -> bool:
        if slot.role == "bias":
            tensor.fill_(0.5)
            return True
        return super().init_private(tensor, slot, model, slots)

    def after_weights_change(self, module: nn.Module) -> None:
        self.refreshed += 1


def _scaled_net() -> nn.Module:
    return nn.Sequential(Scaled(32, 64), nn.ReLU(), Scaled(64, 64), nn.ReLU(), nn.Linear(64, 10))


@pytest.fixture
def scaled_kind() -> Iterator[ScaledKind]:
    kind = register_layer_kind(ScaledKind())
    try:
        yield kind
    finally:
        LAYER_KINDS.pop(kind.name)


def test_unregistered_the_layer_is_the_models_own_parameters():
    with torch.device("meta"):
        model = _scaled_net()
    shared = ssnfx.share(model, 0.5)
    assert {s.kind for s in shared.ssnfx.plan.slots if s.name.startswith("0.")} == {"Parameter"}
    assert initialize(shared.to_empty(device="cpu")) == ["0.bias", "2.bias"]


def test_a_registered_kind_is_used_by_share_and_initialize(scaled_kind):
    """On the meta device the generated weights of the custom layer start at its kind's std
    (the Linear one at PyTorch's), and initialize draws its private bias with the kind's init."""
    with torch.device("meta"):
        model = _scaled_net()
    shared = ssnfx.share(model, 0.5)
    slots = {s.name: s for s in shared.ssnfx.plan.slots}
    assert slots["0.weight"].kind == slots["2.bias"].kind == "Scaled"
    assert initialize(shared.to_empty(device="cpu")) == []
    generated = shared.ssnfx.generate()
    for name in ("0.weight", "2.weight"):
        torch.testing.assert_close(generated[name].std().item(), 0.02, rtol=1e-3, atol=0)
    torch.testing.assert_close(generated["4.weight"].std().item(), 1 / math.sqrt(3 * 64),
                               rtol=1e-3, atol=0)
    assert torch.all(shared.get_parameter("0.bias") == 0.5)
    assert shared(torch.randn(3, 32)).shape == (3, 10)


def test_a_registered_kind_is_told_when_a_leafs_weights_change(scaled_kind):
    model = _scaled_net()
    x = torch.randn(3, 32)
    config = ssnfx.ShareConfig(leaf_modules=("0",))
    gm = ssnfx.trace(model, leaf_modules=config.leaf_modules)
    graph = ssnfx.rewrite(gm, ssnfx.make_plan(gm, 0.5, config))
    assert scaled_kind.refreshed == 1  # the rewrite's copy of the leaf lost its shared weight
    graph(x)
    assert scaled_kind.refreshed == 2  # after the leaf call (functional_call)
    ssnfx.fold(graph)
    assert scaled_kind.refreshed == 3  # after fold gave the leaf its static weights
    # The user's class: both Scaled layers read generated weights, and are told so when shared,
    # before each call, and when fold gives them plain weights.
    scaled_kind.refreshed = 0
    shared = ssnfx.share(model, 0.5, config)
    assert scaled_kind.refreshed == 2
    shared(x)
    assert scaled_kind.refreshed == 4
    folded = ssnfx.fold(shared)
    assert scaled_kind.refreshed == 6 and not folded[0]._forward_pre_hooks
    torch.testing.assert_close(folded(x), shared(x))
