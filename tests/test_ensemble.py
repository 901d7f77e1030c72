import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ssnfx
from ssnfx.data import digits
from ssnfx.deploy import export_pt2, export_torchscript
from ssnfx.ensemble import Members, ensemble, ensemble_loss, member, member_names, select_members
from ssnfx.training import accuracy, train

from helpers import check_members, check_pipeline, count_params
from models import SmallCNN


def stack_cnn(width: int, depth: int) -> nn.Sequential:
    """A plain CNN for 1x8x8 inputs of ``depth`` conv layers: the depth axis of an ensemble."""
    layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


class TrainOnly(nn.Module):
    """Computes something else in training (as an auxiliary head would): two graphs. Reads a
    buffer that is not in its state_dict, which its extracted form must keep out too."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, 10)
        self.register_buffer("scale", torch.tensor(0.5), persistent=False)
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x.flatten(1)))
        if self.training:
            h = h * self.scale
        return self.fc2(h)


def family() -> dict[str, nn.Module]:
    """Two widths and two depths of a CNN, and an MLP: the members of one store."""
    torch.manual_seed(0)
    return {"narrow": SmallCNN(4), "wide": SmallCNN(8), "shallow": stack_cnn(8, 2),
            "deep": stack_cnn(8, 4), "mlp": mlp()}


X = torch.randn(3, 1, 8, 8)


def test_members_of_different_widths_depths_and_families_share_one_store(tmp_path):
    models = family()
    fresh = copy.deepcopy(models)
    members = Members(models)
    shared, folded = check_pipeline(members, (X,), budget=0.3, backward=True,
                                    checkpoint=tmp_path / "members.pt")
    plan = shared.ssnfx.plan
    total = sum(count_params(m) for m in fresh.values())
    assert plan.original_params == total and plan.budget == math.floor(0.3 * total)
    assert len(plan.groups) == 1  # the data-free default: one store for all members
    assert {s.split(".")[0] for s in plan.groups[0].slots} == set(models)
    assert isinstance(shared(X), tuple) and len(shared(X)) == len(models)
    alone = check_members(shared, folded, (X,), fresh)
    assert {n: count_params(m) for n, m in alone.items()} == \
        {n: count_params(m) for n, m in fresh.items()}


def test_share_takes_a_list_and_names_members_by_position():
    shared = ssnfx.share([SmallCNN(4), mlp()], budget=0.5)
    assert member_names(shared) == ["0", "1"]
    assert member_names(ssnfx.fold(shared)) == ["0", "1"]
    assert {s.name.split(".")[0] for s in shared.ssnfx.plan.slots} == {"0", "1"}


def test_a_folded_member_exports_on_its_own(tmp_path):
    fresh = {"cnn": SmallCNN(4), "mlp": mlp()}
    shared = ssnfx.share(copy.deepcopy(fresh), budget=0.5).eval()
    check_members(shared, ssnfx.fold(shared), (X,), fresh, export=tmp_path)  # TorchScript
    alone = member(ssnfx.fold(shared), "cnn")
    export_pt2(alone, (X,), tmp_path / "cnn.pt2")
    program = torch.export.load(str(tmp_path / "cnn.pt2")).module()
    torch.testing.assert_close(program(X), shared(X)[0], rtol=1e-5, atol=1e-5)
    # An ensemble of the folded members exports as one module too.
    export_torchscript(ensemble(ssnfx.fold(shared), ["mlp", "cnn"]), (X,),
                             tmp_path / "both.pt")


def test_members_with_a_training_branch_extract_in_both_modes():
    fresh = {"branchy": TrainOnly(), "mlp": mlp()}
    shared = ssnfx.share(copy.deepcopy(fresh), budget=0.5)
    folded = ssnfx.fold(shared)
    for mode in (True, False):
        shared.train(mode)
        folded.train(mode)
        view, alone = member(shared, "branchy"), member(folded, "branchy")
        assert view.training is mode and alone.training is mode
        with torch.no_grad():
            torch.testing.assert_close(view(X), shared(X)[0], rtol=0, atol=0)
            torch.testing.assert_close(alone(X), folded(X)[0], rtol=0, atol=0)
    check_members(shared, folded, (X,), fresh)


def test_search_over_members_clusters_slots_across_members():
    train_loader, _ = digits()
    models = [SmallCNN(4), stack_cnn(8, 2), mlp()]
    shared = ssnfx.share(models, 0.3, ssnfx.ShareConfig(groups=2), data=train_loader,
                         loss_fn=F.cross_entropy,
                         search_config=ssnfx.SearchConfig(steps=4, progress=False))
    plan = shared.ssnfx.plan
    slots = plan.measured["slots"]
    assert {s.split(".")[0] for s in slots} == {"0", "1", "2"}
    assert sorted(s for g in plan.groups for s in g.slots) == sorted(slots)
    # Three members in two groups: some group holds slots of two members (the search clustered
    # across members rather than per member).
    assert any(len({s.split(".")[0] for s in g.slots}) > 1 for g in plan.groups)
    # share summed the per-member loss: three members start near 3 * log(10).
    assert plan.measured["loss_first"] > 2 * math.log(10)
    assert count_params(shared) <= plan.budget


def test_training_members_trains_every_member():
    train_loader, test_loader = digits()
    batches = [b for _, b in zip(range(15), train_loader)]
    shared = ssnfx.share([SmallCNN(4), mlp()], budget=0.5)
    losses = train(shared, batches, ensemble_loss(F.cross_entropy),
                   epochs=3, lr=1e-2, progress=False)
    assert losses[-1] < losses[0]
    folded = ssnfx.fold(shared)
    for name in ("0", "1"):
        assert accuracy(member(folded, name), test_loader) > 0.3


def test_ensemble_loss_sums_members_and_refuses_a_single_output():
    y = torch.tensor([0, 1])
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    loss = ensemble_loss(F.cross_entropy)
    torch.testing.assert_close(loss((a, b), y), F.cross_entropy(a, y) + F.cross_entropy(b, y))
    weighted = ensemble_loss(F.cross_entropy, weights=[2.0, 0.0])
    torch.testing.assert_close(weighted((a, b), y), 2 * F.cross_entropy(a, y))
    with pytest.raises(ssnfx.EnsembleError, match="tuple of members' outputs"):
        loss(a, y)
    with pytest.raises(ssnfx.EnsembleError, match="2 loss weights for 3 members"):
        weighted((a, b, a), y)
    with pytest.raises(ssnfx.EnsembleError, match="only once"):
        ensemble_loss(loss)


def test_ensemble_averages_the_softmax_of_the_chosen_members_only():
    folded = ssnfx.fold(ssnfx.share(family(), budget=0.3)).eval()
    with torch.no_grad():
        outs = dict(zip(member_names(folded), folded(X)))
        probs = ensemble(folded, ["mlp", "narrow"])(X)
        every = ensemble(folded)(X)
    expected = (outs["mlp"].softmax(1) + outs["narrow"].softmax(1)) / 2
    torch.testing.assert_close(probs, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(every, torch.stack([o.softmax(1) for o in outs.values()]).mean(0))
    subset = select_members(folded, ["mlp", "narrow"])
    assert member_names(subset) == ["mlp", "narrow"]
    # Only what the two members read is kept.
    assert {k.split(".")[0] for k in subset.state_dict()} == {"mlp", "narrow"}
    assert count_params(subset) == count_params(folded.get_submodule("mlp")) + \
        count_params(folded.get_submodule("narrow"))


def test_member_errors_name_the_members():
    shared = ssnfx.share({"cnn": SmallCNN(4), "mlp": mlp()}, budget=0.5)
    with pytest.raises(ssnfx.EnsembleError, match=r"no member 'cnm'; its members are \['cnn', "):
        member(shared, "cnm")
    with pytest.raises(ssnfx.EnsembleError, match="not a model of several members"):
        member(ssnfx.fold(ssnfx.share(SmallCNN(4), 0.5)), "0")
    with pytest.raises(ssnfx.EnsembleError, match="list of member names"):
        select_members(shared, "cnn")
    with pytest.raises(ssnfx.EnsembleError, match="more than once"):
        select_members(shared, ["cnn", "cnn"])


def test_members_refuse_shared_parameters_and_bad_names():
    a = nn.Linear(4, 4)
    with pytest.raises(ssnfx.EnsembleError, match="members share a parameter"):
        Members([a, nn.Sequential(a)])
    with pytest.raises(ssnfx.EnsembleError, match="without '.'"):
        Members({"a.b": nn.Linear(2, 2)})
    with pytest.raises(ssnfx.EnsembleError, match="'ssnfx'"):
        Members({"ssnfx": nn.Linear(2, 2)})
    with pytest.raises(ssnfx.EnsembleError, match="at least one"):
        Members([])
    with pytest.raises(ssnfx.EnsembleError, match="not an nn.Module"):
        Members([nn.Linear(2, 2), "model"])
