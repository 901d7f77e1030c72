import copy

import pytest
import torch
import torch.nn as nn

import ssnfx
from ssnfx.core.plan import Tile
from ssnfx.lsm import identical_weights, layer_similarity
from ssnfx.plot import coefficient_similarity

from helpers import check_pipeline


def three_linears() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(16, 16) for _ in range(3)], nn.Linear(16, 4))


X = torch.randn(2, 16)
SWN_HARD = ssnfx.ShareConfig(method="swn", options={"hard_sharing": True})


def stored_once(folded: nn.Module, names: list[str]) -> bool:
    sd = folded.state_dict()
    return len({sd[n].data_ptr() for n in names}) == 1


def test_hard_shared_layers_are_one_function_and_fold_stores_them_once(tmp_path):
    model = three_linears()  # each layer initialised at its own (random) scale
    shared, folded = check_pipeline(model, (X,), budget=0.5, config=SWN_HARD)
    same = ["0.weight", "1.weight", "2.weight"]
    assert identical_weights(shared) == [same]
    assert stored_once(folded, same)
    params = dict(folded.named_parameters(remove_duplicate=False))
    assert params["0.weight"] is params["1.weight"] is params["2.weight"]
    # One storage in the file too: the folded checkpoint holds the weight once.
    torch.save(folded.state_dict(), tmp_path / "folded.pt")
    torch.save(ssnfx.fold(ssnfx.share(model, 0.5)).state_dict(), tmp_path / "soft.pt")
    assert (tmp_path / "folded.pt").stat().st_size < (tmp_path / "soft.pt").stat().st_size
    lsm = layer_similarity(shared)
    assert {(a, b) for a, b, _ in lsm.near_identical()} == {
        ("0.weight", "1.weight"), ("0.weight", "2.weight"), ("1.weight", "2.weight")}


def test_a_plan_with_tied_coefficients_folds_the_tied_layers_into_one_weight():
    model = three_linears()
    gm = ssnfx.trace(model)
    plan = ssnfx.make_plan(gm, 0.6, ssnfx.ShareConfig(method="swn"))
    group = plan.groups[0]
    # Soft sharing gives each tile its own coefficients; tie layer 2 to layer 1's.
    group.layout["2.weight"] = [Tile(t.superweight, t.row, t.col, u.coefficients)
                                for t, u in zip(group.layout["2.weight"],
                                                group.layout["1.weight"])]
    shared = ssnfx.rewrite(gm, plan).eval()
    folded = ssnfx.fold(shared)
    assert identical_weights(shared) == [["1.weight", "2.weight"]]
    assert stored_once(folded, ["1.weight", "2.weight"])
    assert not stored_once(folded, ["0.weight", "1.weight"])
    fresh = copy.deepcopy(model).eval()
    fresh.load_state_dict(folded.state_dict(), strict=True)
    torch.testing.assert_close(fresh(X), shared(X), rtol=1e-5, atol=1e-5)


def test_the_lsm_is_the_cosine_of_the_layers_coefficients():
    shared = ssnfx.share(three_linears(), 0.6, ssnfx.ShareConfig(method="swn"))
    lsm = layer_similarity(shared)
    assert lsm.names == ["0.weight", "1.weight", "2.weight", "3.weight"]
    m = lsm.matrix
    comparable = ~torch.isnan(m)
    assert torch.equal(comparable, comparable.T) and bool(comparable[:3, :3].all())
    torch.testing.assert_close(m[comparable], m.T[comparable])
    torch.testing.assert_close(torch.diagonal(m[:3, :3]), torch.ones(3))
    assert float(m[comparable].min()) >= 0 and float(m[comparable].max()) <= 1
    assert bool(lsm.same_templates[0, 1]) and not bool(lsm.same_templates[0, 3])
    # Give layer 1 a multiple of layer 0's coefficients: |cos| = 1, a near-identical pair.
    gen, layout = shared.ssnfx.g0, shared.ssnfx.plan.groups[0].layout
    with torch.no_grad():
        for t0, t1 in zip(layout["0.weight"], layout["1.weight"]):
            gen.alpha[t1.coefficients] = -2.0 * gen.alpha[t0.coefficients]
    lsm = layer_similarity(shared)
    assert lsm.near_identical()[0][:2] == ("0.weight", "1.weight")
    assert lsm.pairs()[0][2] == pytest.approx(1.0)
    # Proportional is not equal: fold still stores them apart.
    assert identical_weights(shared) == []
    names, matrix = coefficient_similarity(shared)
    assert names == lsm.names and torch.equal(matrix.isnan(), lsm.matrix.isnan())


def test_no_lsm_without_learned_coefficients():
    assert layer_similarity(ssnfx.share(three_linears(), 0.5,
                                              ssnfx.ShareConfig(combiner="rr"))) is None
    assert layer_similarity(three_linears()) is None
    assert identical_weights(three_linears()) == []


def test_the_report_shows_the_lsm_and_what_fold_stores_once():
    shared = ssnfx.share(three_linears(), 0.5, SWN_HARD)
    text = ssnfx.report(shared)
    assert "layer similarity |cos(alpha_i, alpha_j)| over 4 layers" in text
    assert "0.weight ~ 1.weight 1.000*" in text
    assert "near-identical (|cos| >= 0.999, same templates): 3 of 3 pair(s)" in text
    assert "fold stores 1 weight(s) once for 3 layers (2 fewer tensors)" in text
    plain = ssnfx.report(ssnfx.share(three_linears(), 0.5))
    assert "no two are exactly equal" in plain
    assert "layer similarity" not in ssnfx.report(shared.ssnfx.plan)  # a bare plan: no weights


def test_the_report_lists_the_members_of_one_store():
    shared = ssnfx.share({"a": nn.Linear(8, 8), "b": nn.Sequential(nn.Linear(8, 4))}, 0.5)
    assert "members (2, one store): a (1 shared slots, 64 weights), b (1 shared slots, 32 " \
        "weights)" in ssnfx.report(shared)


def test_layers_that_mix_one_candidate_are_compared_only_over_the_same_templates():
    # 3.weight and 4.weight outgrow the store: each is one candidate, upsampled, times a softmax
    # weight of 1 whatever was learned, so their cosine would be a meaningless 1 (their
    # candidates differ in shape); a layer with itself is still one function.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 64), nn.Linear(64, 64),
                        nn.Linear(64, 48))
    lsm = layer_similarity(ssnfx.share(net, 0.3, ssnfx.ShareConfig(method="ssn")))
    assert lsm.names[3:] == ["3.weight", "4.weight"]
    assert bool(lsm.matrix[3, 4].isnan()) and bool(lsm.matrix[4, 3].isnan())
    assert float(lsm.matrix[3, 3]) == 1.0 and not bool(lsm.matrix[0, 1].isnan())
    assert all("4.weight" not in (a, b) for a, b, _ in lsm.pairs())
