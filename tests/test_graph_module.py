import copy

import torch
import torch.nn as nn

import ssnfx
from ssnfx.core.graph_module import ModeGraphModule

from helpers import check_pipeline


class AuxNet(nn.Module):
    """Branches on self.training, as Inception and GoogLeNet do with their auxiliary heads."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.aux = nn.Linear(16, 3)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.body(x))
        if self.training:
            return self.head(h), self.aux(h)
        return self.head(h)


def test_trace_keeps_a_graph_per_mode():
    model = AuxNet()
    gm = ssnfx.trace(model)
    assert isinstance(gm, ModeGraphModule) and model.training and gm.training
    x = torch.randn(4, 8)
    out, aux = gm(x)
    torch.testing.assert_close(out, model(x)[0])
    assert isinstance(gm.eval()(x), torch.Tensor)
    assert "aux.weight" in {s.name for s in ssnfx.passes.slots_of(gm)}


def test_shared_and_folded_switch_modes_like_the_model():
    model = AuxNet()
    shared, folded = check_pipeline(model, (torch.randn(4, 8),), budget=0.5)
    x = torch.randn(4, 8)
    for m in (shared, folded):
        assert isinstance(m.train()(x), tuple) and isinstance(m.eval()(x), torch.Tensor)
    shared.train()
    out, aux = shared(x)
    (out.sum() + aux.sum()).backward()
    assert all(g.store.grad is not None for g in shared.ssnfx.children())
    fresh = AuxNet()
    fresh.load_state_dict(folded.state_dict(), strict=True)


def test_deepcopy_keeps_both_graphs():
    shared = ssnfx.share(AuxNet(), 0.5)
    clone = copy.deepcopy(shared)
    x = torch.randn(2, 8)
    assert isinstance(clone.train()(x), tuple)
    torch.testing.assert_close(clone.eval()(x), shared.eval()(x))


def test_single_graph_when_modes_agree():
    gm = ssnfx.trace(nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.BatchNorm1d(3)))
    assert not isinstance(gm, ModeGraphModule)
