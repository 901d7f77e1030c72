import pytest
import torch
import torchvision

import ssnfx
import ssnfx.core.config
import ssnfx.core.jit

from helpers import check_pipeline
from models import SmallCNN, TiedLM


def test_folded_state_dict_loads_strictly_into_the_original_class():
    shared = ssnfx.share(torchvision.models.resnet18(), 0.1).eval()
    folded = ssnfx.fold(shared)
    fresh = torchvision.models.resnet18().eval()
    fresh.load_state_dict(folded.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(fresh(x), shared(x), rtol=1e-5, atol=1e-5)


def test_folded_graph_is_the_original_graph():
    model = SmallCNN()
    traced = ssnfx.trace(model)
    folded = ssnfx.fold(ssnfx.rewrite(traced, ssnfx.make_plan(traced, 0.2)))
    def ops(gm):
        return [(n.op, str(n.target)) for n in gm.graph.nodes]
    assert sorted(ops(folded)) == sorted(ops(traced))
    assert not hasattr(folded, "ssnfx")


def test_fold_leaves_shared_model_untouched_and_trainable():
    shared = ssnfx.share(SmallCNN(), 0.2)
    before = {k: v.clone() for k, v in shared.state_dict().items()}
    folded = ssnfx.fold(shared)
    for k, v in shared.state_dict().items():
        assert torch.equal(v, before[k])
    shared(torch.randn(2, 1, 8, 8)).sum().backward()
    assert all(p.requires_grad for p in folded.parameters())


def test_hard_sharing_folds_identical_weights_into_one_tensor():
    model = torch.nn.Sequential(*[torch.nn.Linear(16, 16, bias=False) for _ in range(3)])
    cfg = ssnfx.ShareConfig(method="swn", options={"hard_sharing": True}, strategy="single")
    # make the layers' initial scales equal, so that hard-shared weights are exactly equal
    for m in model:
        torch.nn.init.normal_(m.weight, std=0.1)
    shared, folded = check_pipeline(model, (torch.randn(2, 16),), budget=0.5, config=cfg)
    sd = folded.state_dict(keep_vars=True)
    gains = shared.ssnfx.g0.gain
    if torch.equal(gains, gains[:1].expand_as(gains)):
        assert sd["0.weight"] is sd["1.weight"] is sd["2.weight"]
    else:
        assert torch.allclose(sd["0.weight"] / gains[0], sd["1.weight"] / gains[1])


def test_fold_requires_a_shared_model():
    with pytest.raises(ssnfx.PlanError, match="expects a shared model"):
        ssnfx.fold(ssnfx.trace(SmallCNN()))


def test_private_tied_weights_keep_every_name():
    # A tied parameter kept private (here by ShareConfig.private) used to lose its second name
    # in the folded state_dict (out.weight), which then failed to load into the model.
    shared, folded = check_pipeline(TiedLM(), (torch.randint(0, 50, (2, 7)),), budget=0.95,
                                    config=ssnfx.ShareConfig(private=("emb.*",)))
    assert not shared.ssnfx.plan.slot("emb.weight").shared
    sd = folded.state_dict(keep_vars=True)
    assert sd["emb.weight"] is sd["out.weight"]


class _ConvGRU(torch.nn.Module):
    """A conv, a GRU (a leaf: functional_call) and a head: every kind of read fold restores."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 16, 3, padding=1)
        self.rnn = torch.nn.GRU(16, 16, batch_first=True)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.conv(x).transpose(1, 2))
        return self.head(out[:, -1])


@pytest.mark.parametrize("generation", ssnfx.core.jit.GENERATIONS)
@pytest.mark.parametrize("method", sorted(ssnfx.core.config.METHODS))
@pytest.mark.parametrize("combiner", sorted(ssnfx.core.config.COMBINERS))
def test_fold_keeps_its_promise_in_every_mode(generation, method, combiner, tmp_path):
    """Plain parameters only, the original's names and count, a strict load into the original
    class, no generator left in the graph, and (per mode and method) an export without the
    store: not only the same outputs."""
    torch.manual_seed(0)
    model = _ConvGRU().eval()
    config = ssnfx.ShareConfig(method=method, combiner=combiner, generation=generation)
    shared = ssnfx.share(model, 0.5, config).eval()
    mine = ssnfx.fold(shared)  # the user's class back, with plain weights
    assert type(mine) is _ConvGRU and not hasattr(mine, "ssnfx")
    assert all(type(m).__module__ != "ssnfx.core.shared_model" for m in mine.modules())
    traced = ssnfx.trace(model)
    folded = ssnfx.fold(ssnfx.rewrite(traced, shared.ssnfx.plan).eval())  # the graph's
    folded.load_state_dict(mine.state_dict())
    folded.graph.lint()
    assert not hasattr(folded, "ssnfx")
    assert all(type(p) is torch.nn.Parameter for p in folded.parameters())
    assert sum(p.numel() for p in folded.parameters()) == sum(
        p.numel() for p in model.parameters())
    assert sorted(folded.state_dict()) == sorted(model.state_dict())
    calls = {getattr(n.target, "__module__", "") for n in folded.graph.nodes
             if n.op == "call_function"}
    assert not any(m.startswith("ssnfx") for m in calls), calls  # no jit step, no leaf call
    fresh = _ConvGRU().eval()
    fresh.load_state_dict(folded.state_dict(), strict=True)
    x = torch.randn(2, 4, 5)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), shared(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(folded(x), shared(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mine(x), shared(x), rtol=1e-5, atol=1e-5)
    if combiner == "wavg":  # one export per mode and method: what it ships has no store
        ssnfx.export(folded, (x,), tmp_path / "m.pt2")
        program = torch.export.load(tmp_path / "m.pt2")
        assert sorted(program.state_dict) == sorted(model.state_dict())
        torch.testing.assert_close(program.module()(x), folded(x), rtol=1e-5, atol=1e-5)
