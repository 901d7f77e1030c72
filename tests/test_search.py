import json

import pytest
import torch
import torch.nn.functional as F

import ssnfx
from ssnfx.passes.search import kmeans_groups, superweight_clusters

from models import SmallCNN, ThreeBranches
from models import conflict_data as _conflict_data


def _search(model, method="ssn", **kw):
    cfg = ssnfx.SearchConfig(steps=kw.pop("steps", 30), progress=False, **kw)
    return ssnfx.search(ssnfx.trace(model), 0.5, _conflict_data(), F.mse_loss,
                        ssnfx.ShareConfig(method=method), cfg)


def _group_of(groups):
    return {n: i for i, g in enumerate(groups) for n in g}


def test_conflicting_layers_are_split_and_agreeing_layers_merged():
    torch.manual_seed(0)
    plan = _search(ThreeBranches())
    m = plan.measured
    sim = dict(zip(m["slots"], m["gradient_similarity"]))
    idx = {n: i for i, n in enumerate(m["slots"])}
    assert sim["a1.weight"][idx["c1.weight"]] > 0.5
    assert sim["a1.weight"][idx["b1.weight"]] < -0.5
    for groups in (m["groups"], m["superweight_clusters"]):
        g = _group_of(groups)
        assert g["a1.weight"] == g["c1.weight"] != g["b1.weight"], groups
        assert g["a2.weight"] == g["c2.weight"] != g["b2.weight"], groups
    assert [sorted(gr.slots) for gr in plan.groups] == [sorted(x) for x in m["groups"]]


def test_swn_plan_takes_the_superweight_clusters():
    torch.manual_seed(0)
    plan = _search(ThreeBranches(), method="swn")
    assert [g.slots for g in plan.groups] == plan.measured["superweight_clusters"]
    assert plan.method == "swn"


def test_plan_is_deterministic_for_a_seed():
    def run():
        torch.manual_seed(123)
        d = _search(ThreeBranches(), seed=3, steps=10).to_dict()
        d["measured"].pop("seconds")
        return json.dumps(d)
    assert run() == run()


@pytest.mark.parametrize("method", ["ssn", "swn"])
@pytest.mark.parametrize("budget", [0.05, 0.3, 2.0])
def test_budget_is_met(method, budget):
    model = SmallCNN()
    data = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))) for _ in range(3)]
    shared = ssnfx.share(model, budget, ssnfx.ShareConfig(method=method), data=data,
                         loss_fn=F.cross_entropy,
                         search_config=ssnfx.SearchConfig(steps=4, groups=2, progress=False))
    n = sum(p.numel() for p in shared.parameters())
    target = int(budget * sum(p.numel() for p in model.parameters()))
    assert 0.95 * target <= n <= target
    assert shared.ssnfx.plan.hyper["strategy"] == "search"


def test_fixed_number_of_groups_and_replay():
    plan = _search(ThreeBranches(), groups=3, steps=5)
    assert len(plan.measured["groups"]) == 3 and len(plan.groups) == 3
    again = ssnfx.SharingPlan.from_json(plan.to_json())
    shared = ssnfx.rewrite(ssnfx.trace(ThreeBranches()), again)  # replay without searching
    assert shared(torch.randn(2, 16)).shape == (2, 12)


def test_similarity_graph():
    plan = _search(ThreeBranches(), steps=5)
    graph = ssnfx.similarity_graph(plan)
    assert graph.number_of_nodes() == 6 and graph.number_of_edges() == 15
    assert graph.nodes["a1.weight"]["numel"] == 512
    edge = graph.edges["a1.weight", "c1.weight"]
    assert set(edge) == {"embedding", "gradient"}
    with pytest.raises(ssnfx.SearchError, match="not made by a search"):
        ssnfx.similarity_graph(ssnfx.make_plan(ssnfx.trace(ThreeBranches()), 0.5))


def test_search_trains_and_records_its_cost():
    from ssnfx.data import digits
    train, _ = digits(batch_size=64)
    plan = ssnfx.search(ssnfx.trace(SmallCNN()), 0.3, train, F.cross_entropy,
                        search_config=ssnfx.SearchConfig(progress=False))
    m = plan.measured
    assert m["steps"] == 20 and m["epoch_fraction"] == round(20 / 23, 4) and m["seconds"] > 0
    assert m["loss_last"] < m["loss_first"] / 2


@pytest.mark.parametrize("data,loss,match", [
    ([], F.mse_loss, "empty"),
    ([torch.randn(4, 16)], F.mse_loss, "must be \\(inputs, targets\\)"),
    ([(torch.randn(4, 16), torch.randn(4, 12))], lambda o, t: (o - t) ** 2, "scalar tensor"),
    ([(torch.randn(4, 16), torch.randn(4, 12))], lambda o, t: o.sum() * float("nan"), "stopped"),
])
def test_bad_search_input(data, loss, match):
    with pytest.raises(ssnfx.SearchError, match=match):
        ssnfx.search(ssnfx.trace(ThreeBranches()), 0.5, data, loss,
                     search_config=ssnfx.SearchConfig(steps=3, progress=False))


def test_share_needs_both_data_and_loss():
    with pytest.raises(ssnfx.SearchError, match="both data and loss_fn"):
        ssnfx.share(ThreeBranches(), 0.5, data=_conflict_data())


def test_priority_queue_and_kmeans_helpers():
    s = torch.tensor([[1.0, 0.5, 0.05], [0.5, 1.0, 0.2], [0.05, 0.2, 1.0]])
    assert superweight_clusters(s, ["a", "b", "c"], 0.1) == [["a", "b", "c"]]
    assert superweight_clusters(s, ["a", "b", "c"], 0.3) == [["a", "b"], ["c"]]
    assert superweight_clusters(s, ["a", "b", "c"], 0.9) == [["a"], ["b"], ["c"]]
    flat = torch.zeros(5, 3).numpy()
    groups, scores = kmeans_groups(flat + torch.randn(5, 3).numpy() * 1e-3,
                                   list("abcde"), None, 4, 0.99, 0)
    assert groups == [list("abcde")]  # no structure: one group
