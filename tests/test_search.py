import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import ssnfx
import ssnfx.core.selector
from ssnfx.core.plan import GroupPlan, Slot
from ssnfx.core.selector import swn_layout
from ssnfx.passes.clustering import kmeans_groups, superweight_clusters
from ssnfx.passes.statistics import SuperWeightGradients

from models import KeywordModel, SmallCNN, ThreeBranches
from models import conflict_data as _conflict_data


def _search(model, method="ssn", budget=0.5, groups=None, seed=0, **kw):
    # The groupings themselves, as the papers make them: without the guard unless asked.
    kw.setdefault("guard", False)
    cfg = ssnfx.SearchConfig(steps=kw.pop("steps", 30), progress=False, **kw)
    return ssnfx.search(ssnfx.trace(model), budget, _conflict_data(), F.mse_loss,
                        ssnfx.ShareConfig(method=method, groups=groups, seed=seed), cfg)


def _group_of(groups):
    return {n: i for i, g in enumerate(groups) for n in g}


def test_conflicting_layers_are_split_and_agreeing_layers_merged():
    torch.manual_seed(0)
    plan = _search(ThreeBranches(), budget=0.9)  # room for a group per branch family
    m = plan.measured
    sim = dict(zip(m["slots"], m["gradient_similarity"]))
    idx = {n: i for i, n in enumerate(m["slots"])}
    assert sim["a1.weight"][idx["c1.weight"]] > 0.9
    assert sim["a1.weight"][idx["b1.weight"]] < -0.2  # (summed over the last epoch only)
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
    shared = ssnfx.share(model, budget, ssnfx.ShareConfig(method=method, groups=2), data=data,
                         loss_fn=F.cross_entropy,
                         search_config=ssnfx.SearchConfig(steps=4, progress=False))
    n = sum(p.numel() for p in shared.parameters())
    target = int(budget * sum(p.numel() for p in model.parameters()))
    assert 0.95 * target <= n <= target
    assert shared.ssnfx.plan.options.strategy == "search"


def test_fixed_number_of_groups_and_replay():
    plan = _search(ThreeBranches(), groups=3, steps=5)
    assert len(plan.measured["groups"]) == 3 and len(plan.groups) == 3
    again = ssnfx.SharingPlan.from_json(plan.to_json())
    shared = ssnfx.rewrite(ssnfx.trace(ThreeBranches()), again)  # replay without searching
    assert shared(torch.randn(2, 16)).shape == (2, 12)


def test_similarity_graph():
    plan = _search(ThreeBranches(), steps=5)
    graph = ssnfx.passes.similarity_graph(plan)
    assert graph.number_of_nodes() == 6 and graph.number_of_edges() == 15
    assert graph.nodes["a1.weight"]["numel"] == 512
    edge = graph.edges["a1.weight", "c1.weight"]
    assert set(edge) == {"embedding", "gradient", "covariation"}
    # The decision replays from the graph alone: clusters from its edges, groups from its nodes.
    m = plan.measured
    assert superweight_clusters(graph, m["tau_used"]) == m["superweight_clusters"]
    features = [graph.nodes[n]["embedding"] for n in m["slots"]]
    assert kmeans_groups(features, m["slots"], len(m["groups"]), 8, 0.2, 0)[0] == m["groups"]
    assert {graph.nodes[n]["group"] for n in m["slots"]} == {g.name for g in plan.groups}
    with pytest.raises(ssnfx.SearchError, match="not made by a search"):
        ssnfx.passes.similarity_graph(ssnfx.make_plan(ssnfx.trace(ThreeBranches()), 0.5))


def test_search_trains_and_records_its_cost():
    from ssnfx.data import digits
    train, _ = digits(batch_size=64)
    plan = ssnfx.search(ssnfx.trace(SmallCNN()), 0.3, train, F.cross_entropy,
                        search_config=ssnfx.SearchConfig(progress=False))
    m = plan.measured
    # SearchConfig.epochs=2 by default: two passes over the 23 batches.
    assert m["steps"] == 46 and m["epoch_fraction"] == 2.0 and m["seconds"] > 0
    assert m["loss_last"] < m["loss_first"] / 2


import ssnfx.passes.searching as search_pass  # noqa: E402


def _xy(n=4):
    return torch.randn(n, 16), torch.randn(n, 12)


def _empty_loader():
    return DataLoader(TensorDataset(torch.randn(0, 16), torch.randn(0, 12)), batch_size=4)


@pytest.mark.parametrize("data,loss,message", [
    ([], F.mse_loss, "the search data is empty: it yielded no batch"),
    (_empty_loader(), F.mse_loss, "the search data is empty: it yielded no batch"),
    ([torch.randn(4, 16)], F.mse_loss,
     "each batch must be (inputs, targets); got a Tensor at search step 0: make the data yield "
     "(inputs, targets) pairs"),
    ([{"x": torch.randn(4, 16), "y": torch.randn(4, 12)}], F.mse_loss,
     "each batch must be (inputs, targets); got a dict at search step 0"),
    ([(*_xy(), torch.ones(4))], F.mse_loss,
     "each batch must be (inputs, targets); got a tuple of length 3 at search step 0"),
    ([(torch.randn(4, 15), torch.randn(4, 12))], F.mse_loss,
     "the model failed at search step 0 on the inputs Tensor(4, 15): RuntimeError: mat1 and "
     "mat2 shapes cannot be multiplied"),
    ([_xy()[::-1]], F.mse_loss, "the model failed at search step 0 on the inputs Tensor(4, 12)"),
    ([_xy()], lambda o, t: F.mse_loss(o, t[:, :5]),
     "loss_fn raised RuntimeError at search step 0 on outputs Tensor(4, 12) and targets "
     "Tensor(4, 12): The size of tensor a (12) must match"),
    ([_xy()], lambda o, t: (o - t) ** 2,
     "loss_fn must return a scalar tensor; got Tensor(4, 12) at search step 0: reduce it"),
    ([_xy()], lambda o, t: float(F.mse_loss(o, t)),
     "loss_fn must return a scalar tensor; got float() at search step 0"),
    ([_xy()], lambda o, t: F.mse_loss(o.detach(), t),
     "the loss at search step 0 does not depend on the model's parameters (it has no grad_fn): "
     "compute it from the outputs passed to loss_fn, without .detach()"),
    ([_xy()], lambda o, t: o.sum() * float("nan"),
     "the loss is nan at search step 0; the search stopped and returns no plan"),
    ([_xy()], lambda o, t: o.sum().abs() * float("inf"), "the loss is inf at search step 0"),
])
def test_bad_search_input(data, loss, message):
    with pytest.raises(ssnfx.SearchError) as err:
        ssnfx.search(ssnfx.trace(ThreeBranches()), 0.5, data, loss,
                     search_config=ssnfx.SearchConfig(steps=3, progress=False))
    assert message in str(err.value)


def _failing_at(step, make_bad):
    """A loss that is mse until ``step``, then ``make_bad(outputs, mse)``."""
    calls = []

    def loss(outputs, targets):
        calls.append(None)
        mse = F.mse_loss(outputs, targets)
        return make_bad(outputs, mse) if len(calls) > step else mse
    return loss


@pytest.mark.parametrize("step", [3, 5])  # a later step, and the last one
def test_nan_at_a_later_step_stops_the_search(step, monkeypatch):
    built = []
    monkeypatch.setattr(search_pass, "make_plan",
                        lambda *a, **kw: built.append(kw) or ssnfx.make_plan(*a, **kw))
    with pytest.raises(ssnfx.SearchError, match=f"the loss is nan at search step {step}; the "
                                                f"search stopped and returns no plan"):
        ssnfx.search(ssnfx.trace(ThreeBranches()), 0.5, _conflict_data(),
                     _failing_at(step, lambda o, mse: mse * float("nan")),
                     search_config=ssnfx.SearchConfig(steps=6, progress=False))
    assert built and all(kw.get("measured") is None for kw in built)  # only provisional plans


@pytest.mark.parametrize("step", [0, 5])
def test_non_finite_gradients_stop_the_search(step):
    # A finite loss whose gradient is not: sqrt at 0 (its derivative is infinite there, and the
    # zero factor makes it NaN). At the last step the optimizer would not have spread it into
    # the loss: only the gradient statistics saw it.
    def bad(outputs, mse):
        return mse + 0 * (outputs - outputs.detach()).abs().sqrt().sum()
    with pytest.raises(ssnfx.SearchError) as err:
        ssnfx.search(ssnfx.trace(ThreeBranches()), 0.5, _conflict_data(), _failing_at(step, bad),
                     search_config=ssnfx.SearchConfig(steps=6, progress=False))
    msg = str(err.value)
    assert f"are not finite at search step {step} although the loss is" in msg
    assert re.search(r"the gradients of \['[abc][12]\.weight'", msg)  # layers, named
    assert "returns no plan" in msg and "sqrt or log at 0" in msg


def test_returned_plans_hold_finite_statistics_only():
    plan = _search(ThreeBranches(), steps=5)
    json.dumps(plan.to_dict(), allow_nan=False)  # raises on NaN or infinity anywhere
    m = plan.measured
    assert all(math.isfinite(v) for row in m["gradient_similarity"] for v in row)
    assert all(math.isfinite(v) for row in m["embedding_similarity"] for v in row)


def test_share_needs_both_data_and_loss():
    with pytest.raises(ssnfx.SearchError, match="both data and loss_fn"):
        ssnfx.share(ThreeBranches(), 0.5, data=_conflict_data())


def test_guard_splits_only_where_each_group_can_hold_its_largest_layer():
    """With SearchConfig.guard, at a budget whose store is smaller than any two groups' largest
    layers put together, the automatic count keeps one group, and says which counts would have
    fit."""
    torch.manual_seed(0)
    small = _search(ThreeBranches(), budget=0.3, guard=True, silhouette=True,
                    features="displacement").measured
    assert small["groups"] == [small["slots"]]
    assert small["fitting_group_counts"] == [] and float(small["silhouette"]["2"]) > 0.2
    torch.manual_seed(0)
    large = _search(ThreeBranches(), budget=0.9, guard=True, silhouette=True,
                    features="displacement").measured
    assert len(large["groups"]) > 1 and len(large["groups"]) in large["fitting_group_counts"]


def test_search_takes_keyword_batches():
    # Hugging Face style: inputs as a dict of keyword arguments, the model one leaf call.
    torch.manual_seed(0)
    ids = torch.randint(0, 30, (8, 5))
    data = [({"input_ids": ids, "attention_mask": torch.ones(8, 5)}, ids)] * 3

    def loss_fn(out, target):
        return F.cross_entropy(out["logits"].flatten(0, 1), target.flatten())

    shared = ssnfx.share(KeywordModel(), 0.5, data=data, loss_fn=loss_fn,
                         search_config=ssnfx.SearchConfig(steps=3, progress=False))
    assert shared.ssnfx.plan.measured["steps"] == 3
    assert "loss" in shared(ids, labels=ids)


@pytest.mark.parametrize("kwargs,message", [
    ({"steps": 0}, "SearchConfig.steps must be a positive int or None, got 0"),
    ({"max_groups": 2.5}, "SearchConfig.max_groups must be a positive int, got 2.5"),
    ({"lr": float("nan")}, "SearchConfig.lr must be a positive number, got nan"),
    ({"tau": 2}, "SearchConfig.tau is compared with cosines or silhouette scores"),
    ({"combiner": "rr"}, "SearchConfig.combiner must be a registered combiner that learns"),
    ({"statistic": "weights"}, "SearchConfig.statistic must be one of ('coefficients', "),
])
def test_search_config_is_validated(kwargs, message):
    with pytest.raises(ssnfx.SearchError, match=re.escape(message)):
        ssnfx.SearchConfig(**kwargs)
    with pytest.raises(ssnfx.SearchError, match="unknown SearchConfig field"):
        ssnfx.SearchConfig.from_json('{"stpes": 10}')
    # What the search shares with the final model is ShareConfig's: one place, one meaning.
    with pytest.raises(ssnfx.SearchError, match=r"\['candidates', 'groups'\] are ShareConfig's"):
        ssnfx.SearchConfig.from_json('{"groups": 2, "candidates": 4}')


@pytest.mark.parametrize("combiner", ["wavg", "linear"])
def test_search_learns_with_any_learned_combiner(combiner):
    torch.manual_seed(0)
    plan = _search(ThreeBranches(), combiner=combiner, steps=10)
    m = plan.measured
    assert m["combiner"] == combiner
    moved = torch.tensor(m["embeddings"])
    assert moved.shape[0] == len(m["slots"]) and torch.isfinite(moved).all()
    assert plan.shared_params <= plan.budget


def test_search_model_does_not_depend_on_the_target_budget():
    """The provisional store is sized on its own (SearchConfig.store), so at the least budget
    the final plan fits, where Emb's coefficients alone exceed the budget, the search still
    learns with Emb (SSN Sec. 3.2), and the plan it returns fits the budget."""
    model = SmallCNN()
    gm = ssnfx.trace(model)
    data = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))) for _ in range(3)]
    least = {c: _least(gm, c) for c in ("emb", "linear")}
    assert least["linear"] < least["emb"]
    budget = least["linear"]
    plan = ssnfx.search(gm, budget, data, F.cross_entropy, ssnfx.ShareConfig(combiner="linear"),
                        ssnfx.SearchConfig(steps=3, progress=False))
    weights = sum(s.numel for s in plan.slots if s.shared)
    assert plan.measured["combiner"] == "emb" and plan.measured["search_store"] == weights
    assert plan.shared_params <= budget
    half = ssnfx.search(gm, budget, data, F.cross_entropy, ssnfx.ShareConfig(combiner="linear"),
                        ssnfx.SearchConfig(steps=3, store=0.5, progress=False))
    assert half.measured["search_store"] == weights // 2 // 4 * 4


def _least(gm, combiner: str) -> int:
    """The least budget one group with ``combiner`` fits (from the planner's own error)."""
    with pytest.raises(ssnfx.BudgetError) as e:
        ssnfx.make_plan(gm, 1, ssnfx.ShareConfig(combiner=combiner))
    return int(str(e.value).split("shared with: ")[1].split(" (")[0].replace(",", ""))


def test_swn_clusters_always_hold_their_largest_superweight():
    """SWN Sec. 2.2.1's clusters at a threshold that keeps every layer apart would starve
    them at a small budget: tau is lowered until every cluster's store holds its largest
    SuperWeight, and the plan records the threshold used."""
    torch.manual_seed(0)
    plan = _search(ThreeBranches(), method="swn", budget=0.3, tau=0.999, steps=5, guard=True)
    m = plan.measured
    assert m["tau"] == 0.999 and (m["tau_used"] is None or m["tau_used"] < 0.999)
    # ... where the clusters at tau itself were more (each layer alone) than the budget holds.
    at_tau = superweight_clusters(ssnfx.passes.similarity_graph(plan), 0.999)
    assert len(at_tau) > len(plan.groups)
    for g in plan.groups:
        assert g.numel >= max(r * c for r, c in g.superweights)
    # With room for every layer's own store, the threshold stands.
    roomy = _search(ThreeBranches(), method="swn", budget=3.0, tau=0.999, steps=5, guard=True)
    assert roomy.measured["tau_used"] == 0.999
    assert len(roomy.groups) == len(roomy.measured["superweight_clusters"])


def test_eq2_statistic_splits_conflicting_layers():
    """SWN Eq. 2 on a hard-shared SWN model: the three branches share every SuperWeight, and
    branch b, pulled towards the opposite target, sends them the opposite gradients."""
    torch.manual_seed(0)
    plan = _search(ThreeBranches(), method="swn", budget=0.9, statistic="superweights")
    m = plan.measured
    sim = dict(zip(m["slots"], m["gradient_similarity"]))
    idx = {n: i for i, n in enumerate(m["slots"])}
    assert sim["a1.weight"][idx["c1.weight"]] > 0.9 > -0.9 > sim["a1.weight"][idx["b1.weight"]]
    assert m["statistic"] == "superweights" and "embeddings" not in m and m["groups"] is None
    g = _group_of(plan.measured["superweight_clusters"])
    assert g["a1.weight"] == g["c1.weight"] != g["b1.weight"]
    assert g["a2.weight"] == g["c2.weight"] != g["b2.weight"]
    assert [g.slots for g in plan.groups] == plan.measured["superweight_clusters"]
    graph = ssnfx.passes.similarity_graph(plan)  # the graph needs no embeddings
    assert set(graph.edges["a1.weight", "b1.weight"]) == {"gradient", "covariation"}
    assert graph.edges["a1.weight", "b1.weight"]["gradient"] == sim["a1.weight"][idx["b1.weight"]]
    # SSN plans take learned groups, which only the coefficient statistic gives: asked for Eq.
    # 2, an SSN search says so instead of ignoring it.
    with pytest.raises(ssnfx.SearchError, match="shares by groups"):
        _search(ThreeBranches(), budget=0.9, statistic="superweights", steps=5)


def test_eq2_similarity_is_over_the_superweights_two_slots_share():
    """Every pair against the plain definition: the cosine of the two slots' gradient regions
    over the SuperWeights both use, concatenated."""
    slots = [Slot(n, shape, "weight", "Linear", i) for i, (n, shape) in
             enumerate([("a", (4, 4)), ("b", (8, 6)), ("c", (8, 4)), ("d", (4, 6))])]
    sws, layout = swn_layout(slots, hard_sharing=True)
    group = GroupPlan("g0", [s.name for s in slots], 100, 4, sws, layout)
    stats = SuperWeightGradients(group, {s.name: s for s in slots})
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):  # summed over steps
        for i, s in enumerate(slots):
            stats.record(i, torch.randn(s.shape, generator=gen))
        assert stats.step() == []
    sim = stats.similarity([s.name for s in slots])

    def regions(i: int) -> dict[int, torch.Tensor]:
        total = stats.totals[i]
        return {t.superweight: total[t.row: t.row + sws[t.superweight][0],
                                     t.col: t.col + sws[t.superweight][1]].reshape(-1)
                for t in layout[slots[i].name]}

    for i in range(4):
        for j in range(4):
            ri, rj = regions(i), regions(j)
            common = sorted(ri.keys() & rj.keys())
            want = F.cosine_similarity(torch.cat([ri[k] for k in common]),
                                       torch.cat([rj[k] for k in common]), dim=0)
            assert sim[i, j] == pytest.approx(float(want), abs=1e-6), (i, j)
    assert stats.totals[0].abs().sum() > 0
    stats.record(1, torch.full((8, 6), float("nan")))
    assert stats.step() == ["b"]


def test_provisional_model_is_ssn_sec_3_2():
    """One group over every shared layer; its store, sized by SearchConfig.store and not by the
    budget, split into P equal, non-overlapping candidates; every layer bilinearly resizes each
    of the same P candidates (up or down) to its shape and mixes all P of them."""
    from ssnfx.passes.provisional import provisional_model

    torch.manual_seed(0)
    gm = ssnfx.trace(SmallCNN())
    model = provisional_model(gm, ssnfx.ShareConfig(), store=0.5)
    plan, g = model.ssnfx.plan, model.ssnfx.g0
    shared = [s for s in plan.slots if s.shared]
    assert len(plan.groups) == 1 and plan.groups[0].selection == "resized"
    assert g.store.numel() == sum(s.numel for s in shared) // 2 // 4 * 4
    assert g.combiner.name == "emb" and bool((g.mix_kept == 1).all()) and g.mix_kept.shape[1] == 4
    chunk = g.store.numel() // 4
    candidates = g.store.detach().view(4, chunk)  # equal and non-overlapping
    mix = g.mixing().detach()
    row = {int(o): r for r, o in enumerate(g.mix_owner)}
    sizes = set()
    for i, (slot, w) in enumerate(zip(g.names, g())):
        rows, cols = plan.slot(slot).matrix
        r, c = ssnfx.core.selector.resize_source(chunk, rows, cols)
        sizes.add((r * c > rows * cols) - (r * c < rows * cols))
        resized = F.interpolate(candidates[:, :r * c].reshape(4, 1, r, c), size=(rows, cols),
                                mode="bilinear", align_corners=False).view(4, -1)
        torch.testing.assert_close(w.detach().reshape(-1), mix[row[i]] @ resized)
    assert sizes == {-1, 1}  # this store is larger than some layers and smaller than others


def test_kmeans_reads_phi_and_the_split_is_proportional(monkeypatch):
    """K-means clusters the trained layer representations phi themselves (SSN Sec. 3.2) into
    the configured number of groups, and each group's store is its share of the budget in
    proportion to the weights its layers represent."""
    seen = {}
    real_kmeans, real_model = search_pass.kmeans_groups, search_pass.provisional_model
    monkeypatch.setattr(search_pass, "provisional_model",
                        lambda *a: seen.setdefault("model", real_model(*a)))
    monkeypatch.setattr(search_pass, "kmeans_groups",
                        lambda f, *a, **k: seen.setdefault("features", f) is not None
                        and real_kmeans(f, *a, **k))
    torch.manual_seed(0)
    plan = _search(ThreeBranches(), budget=0.9, groups=3)
    phi = seen["model"].ssnfx.g0.phi.detach()
    np_phi = phi.numpy()
    assert seen["features"].shape == np_phi.shape
    assert abs(seen["features"] - np_phi).max() < 1e-4  # (rounded to 4 places in the plan)
    assert len(plan.groups) == 3 and plan.measured["split"] == "proportional"
    weights = {g.name: sum(plan.slot(n).numel for n in g.slots) for g in plan.groups}
    stores = sum(g.numel for g in plan.groups)
    for g in plan.groups:
        assert abs(g.numel - stores * weights[g.name] / sum(weights.values())) <= 1


class _TwoTasks(torch.nn.Module):
    """Two branches of alike layers on two unrelated regression tasks."""

    def __init__(self) -> None:
        super().__init__()
        self.p = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                     torch.nn.Linear(16, 16), torch.nn.Tanh(),
                                     torch.nn.Linear(16, 2))
        self.q = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                     torch.nn.Linear(16, 16), torch.nn.Tanh(),
                                     torch.nn.Linear(16, 2))

    def forward(self, x, z):
        return torch.cat([self.p(x), self.q(z)], 1)


def _two_task_data(batches: int = 12):
    gen = torch.Generator().manual_seed(0)
    wp, wq = torch.randn(8, 2, generator=gen), torch.randn(8, 2, generator=gen)
    out = []
    for _ in range(batches):  # each task's batches come at scales of their own
        x = torch.randn(16, 8, generator=gen) * (0.2 + 2 * torch.rand(1, generator=gen))
        z = torch.randn(16, 8, generator=gen) * (0.2 + 2 * torch.rand(1, generator=gen))
        out.append(((x, z), torch.cat([x @ wp, torch.sin(z @ wq)], 1)))
    return out


@pytest.mark.parametrize("method", ["ssn", "swn"])
def test_covariation_groups_the_layers_of_each_task(method):
    """The sizes of a task's layer gradients rise and fall together from batch to batch: the
    covariation statistic puts each branch in its own group, on either method's search model."""
    torch.manual_seed(0)
    plan = ssnfx.search(ssnfx.trace(_TwoTasks()), 0.5, _two_task_data(), F.mse_loss,
                        ssnfx.ShareConfig(method=method, groups=2),
                        ssnfx.SearchConfig(statistic="covariation", guard=False,
                                           progress=False))
    m = plan.measured
    assert m["statistic"] == "covariation"
    assert m["model"] == {"ssn": "provisional", "swn": "hard-shared"}[method]
    assert sorted(map(sorted, m["groups"])) == [["p.0.weight", "p.2.weight", "p.4.weight"],
                                                 ["q.0.weight", "q.2.weight", "q.4.weight"]]
    assert [g.slots for g in plan.groups] == m["groups"]


def test_covariation_is_the_correlation_of_log_gradient_norms():
    from ssnfx.passes.statistics import GradientCovariation

    torch.manual_seed(0)
    stats = GradientCovariation(["a", "b", "c"])
    norms = torch.rand(6, 3, dtype=torch.float64) + 0.1
    for t, row in enumerate(norms):
        for i, n in enumerate(row):
            stats.record(i, torch.full((2, 2), float(n) / 2))  # a 2 x 2 gradient of norm n
        assert stats.step(measure=t > 0) == []
    import numpy as np
    expected = np.corrcoef(norms[1:].log().numpy().T)
    assert np.allclose(stats.similarity().numpy(), expected, atol=1e-6)
    stats.record(0, torch.tensor([float("nan")]))
    assert stats.step() == ["a"]


def test_the_provisional_model_keeps_only_its_combiners_own_settings():
    # A setting of the user's method or combiner is not the search model's (SSN with Emb): it
    # would be refused by the planner there; Emb's own emb_dim is kept.
    from ssnfx.passes.provisional import provisional_model

    gm = ssnfx.trace(SmallCNN())
    config = ssnfx.ShareConfig(combiner="emb", options={"emb_dim": 8})
    model = provisional_model(gm, config)
    assert model.ssnfx.plan.options.components == {"emb_dim": 8}
    model = provisional_model(gm, config, combiner="wavg")
    assert model.ssnfx.plan.options.components == {}

