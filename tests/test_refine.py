import torch
import torch.nn.functional as F

import ssnfx

from models import ThreeBranches, conflict_data

HARD = ssnfx.ShareConfig(method="swn", options={"hard_sharing": True})


def _trained(data, steps=20):
    torch.manual_seed(0)
    shared = ssnfx.share(ThreeBranches(), 0.5, HARD)
    opt = torch.optim.Adam(shared.parameters(), lr=1e-2)
    for i in range(steps):
        x, y = data[i % len(data)]
        opt.zero_grad()
        F.mse_loss(shared(x), y).backward()
        opt.step()
    return shared, opt


def _cluster_of(result, slot):
    """The cluster index of ``slot``'s uses, in the first untied row that ``slot`` uses."""
    clusters = next(c for c in result.untied.values()
                    if any(u.startswith("a1.weight#") for cl in c for u in cl))
    return next(i for i, c in enumerate(clusters) if any(u.startswith(slot + "#") for u in c))


def test_conflicting_layers_get_their_own_coefficients():
    data = conflict_data()
    shared, opt = _trained(data)
    before_n = sum(p.numel() for p in shared.parameters())
    x = torch.randn(5, 16)
    before = shared(x).detach()
    result = ssnfx.refine(shared, data, F.mse_loss, steps=4)
    assert result.changed and result.new_parameters == []
    assert _cluster_of(result, "a1.weight") == _cluster_of(result, "c1.weight")
    assert _cluster_of(result, "a1.weight") != _cluster_of(result, "b1.weight")
    assert shared.ssnfx.plan is result.plan
    rows = {t.coefficients for t in result.plan.groups[0].layout["b1.weight"]}
    assert rows != {t.coefficients for t in result.plan.groups[0].layout["a1.weight"]}
    # the same parameters, the same function, and training goes on with the same optimizer
    assert sum(p.numel() for p in shared.parameters()) == before_n
    torch.testing.assert_close(shared(x), before)
    losses = []
    for i in range(30):
        xb, yb = data[i % len(data)]
        opt.zero_grad()
        loss = F.mse_loss(shared(xb), yb)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_agreeing_layers_change_nothing():
    agree = [(x, torch.cat([y[:, :4]] * 3, dim=1)) for x, y in conflict_data()]
    shared, _ = _trained(agree)
    plan = shared.ssnfx.plan
    result = ssnfx.refine(shared, agree, F.mse_loss, steps=4, beta=0.0)
    assert not result.changed and result.similarity
    assert min(v for m in result.similarity.values() for r in m for v in r) > 0
    assert shared.ssnfx.plan is plan
    # At the default beta (0.9) uses at different depths may part, agreeing branches never.
    for clusters in ssnfx.refine(shared, agree, F.mse_loss, steps=4).untied.values():
        for cluster in clusters:
            assert len({u.split(".")[0][1] for u in cluster}) == 1, clusters  # one depth each


def test_refine_leaves_norm_statistics_as_they_were():
    # In train mode the measurement's forward passes would move BatchNorm's running statistics
    # (eval outputs shifted by 0.24 before): they are restored, so only the plan changes.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.BatchNorm1d(16),
                              torch.nn.Linear(16, 16))
    shared = ssnfx.share(net, 0.5, HARD).train()
    data = [(torch.randn(8, 16) * 3 + 1, torch.randn(8, 16)) for _ in range(4)]
    x = torch.randn(5, 16)
    before = shared.eval()(x).detach()
    stats = {k: v.clone() for k, v in shared.state_dict().items() if "running" in k}
    ssnfx.refine(shared.train(), data, F.mse_loss, steps=4)
    assert all(torch.equal(shared.state_dict()[k], v) for k, v in stats.items())
    torch.testing.assert_close(shared.eval()(x), before)


def test_refined_model_round_trips_and_folds(tmp_path):
    data = conflict_data()
    shared, _ = _trained(data)
    assert ssnfx.refine(shared, data, F.mse_loss, steps=4).changed
    ssnfx.save(shared, tmp_path / "r.pt")
    again = ssnfx.load(ThreeBranches(), tmp_path / "r.pt")
    x = torch.randn(3, 16)
    torch.testing.assert_close(again(x), shared(x))
    torch.testing.assert_close(ssnfx.fold(shared)(x), shared(x), rtol=1e-5, atol=1e-5)


def test_soft_sharing_has_nothing_to_refine():
    shared = ssnfx.share(ThreeBranches(), 0.5, ssnfx.ShareConfig(method="ssn"))
    assert not ssnfx.refine(shared, conflict_data(), F.mse_loss, steps=1).changed
