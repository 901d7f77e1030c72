"""Just-in-time generation (ssnfx.core.jit): the same function and gradients as the batched mode,
weights not kept between their layer's forward and backward, the store's gradient once a step."""
from __future__ import annotations

import copy
import dataclasses
import gc
import weakref

import pytest
import torch
import torch.nn as nn

import ssnfx
import ssnfx.core.jit
from ssnfx.core.generator import GroupGenerator

from models import AttnNet, GRUNet, SmallCNN, TiedAcrossLeaf, TiedInsideLeaf, TiedLM


def _tokens(*shape: int) -> torch.Tensor:
    return torch.randint(0, 40, shape, generator=torch.Generator().manual_seed(1))


def _float(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))


CASES = {
    # name: (model, input, budget, config)
    "cnn ssn": (SmallCNN, lambda: _float(4, 1, 8, 8), 0.1, {"method": "ssn"}),
    "cnn swn soft": (SmallCNN, lambda: _float(4, 1, 8, 8), 0.2, {"method": "swn"}),
    "cnn swn hard": (SmallCNN, lambda: _float(4, 1, 8, 8), 0.2,
                     {"method": "swn", "options": {"hard_sharing": True}}),
    "cnn rr": (SmallCNN, lambda: _float(4, 1, 8, 8), 0.1, {"method": "ssn", "combiner": "rr"}),
    "cnn emb": (SmallCNN, lambda: _float(4, 1, 8, 8), 0.3, {"method": "ssn", "combiner": "emb"}),
    "upsampled": (_mlp, lambda: _float(3, 64), 0.05, {"method": "ssn", "combiner": "avg"}),
    "resized": (SmallCNN, lambda: _float(4, 1, 8, 8), 0.3,
                {"method": "ssn", "combiner": "emb", "selection": "resized"}),
    "resized swn": (SmallCNN, lambda: _float(4, 1, 8, 8), 0.3,
                    {"method": "swn", "options": {"hard_sharing": True},
                     "selection": "resized"}),
    "tied": (TiedLM, lambda: _tokens(2, 5), 0.5, {}),
    "attention leaf": (AttnNet, lambda: _float(2, 5, 8), 0.3, {}),
    "gru leaf": (GRUNet, lambda: _float(2, 7, 8), 0.3, {}),
    "tied across a leaf": (TiedAcrossLeaf, lambda: _tokens(2, 6), 0.5, {}),
    "model is one leaf": (TiedInsideLeaf, lambda: _tokens(2, 6), 0.5, {}),
}


def _step(make, x, budget, config, generation):
    torch.manual_seed(0)
    shared = ssnfx.share(make().double(), budget,
                         ssnfx.ShareConfig(generation=generation, **config))
    out = shared(x)
    out.square().mean().backward()
    return shared, out, {n: p.grad for n, p in shared.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("case", list(CASES))
def test_jit_computes_what_the_batched_mode_computes(case):
    make, inputs, budget, config = CASES[case]
    x = inputs()
    batched, out, grads = _step(make, x, budget, config, "batched")
    jit, out_jit, grads_jit = _step(make, x, budget, config, "jit")
    assert jit.ssnfx.plan.options.generation == "jit"
    graph = ssnfx.rewrite(ssnfx.trace(make()), jit.ssnfx.plan).graph  # the pass's product too
    assert any(n.target is ssnfx.core.jit.weight for n in graph.nodes)
    # float64: the two modes sum in other orders, so they agree to rounding, not bitwise.
    torch.testing.assert_close(out_jit, out, rtol=1e-10, atol=1e-12)
    assert grads_jit.keys() == grads.keys() and any(k.startswith("ssnfx.") for k in grads)
    for name, g in grads.items():
        torch.testing.assert_close(grads_jit[name], g, rtol=1e-9, atol=1e-12, msg=name)
    if case == "upsampled":  # the store is smaller than a SuperWeight: upsampled, not gathered
        assert any(b.count == 0 for b in jit.ssnfx.g0._buckets)
    # Deployment is the same: fold generates every weight at once.
    torch.testing.assert_close(ssnfx.fold(jit)(x), ssnfx.fold(batched)(x))


def _made_weights(monkeypatch) -> list[weakref.ref]:
    made: list[weakref.ref] = []
    slot_weight = GroupGenerator.slot_weight

    def recording(self, i, mix):
        w = slot_weight(self, i, mix)
        # The storage, not the tensor: a saved view (linear saves weight.t()) keeps it alive.
        made.append(weakref.ref(w.untyped_storage()))
        return w

    monkeypatch.setattr(GroupGenerator, "slot_weight", recording)
    return made


@pytest.mark.parametrize("regenerate", [True, False])
def test_weights_are_not_kept_between_forward_and_backward(monkeypatch, regenerate):
    made = _made_weights(monkeypatch)
    if not regenerate:  # the control: layers keep the weights they read, as in batched mode
        monkeypatch.setattr(ssnfx.core.jit, "_pack", lambda t: t)
    torch.manual_seed(0)
    shared = ssnfx.share(AttnNet(), 0.3, ssnfx.ShareConfig(generation="jit"))
    made.clear()  # (the initial gains are measured on weights made at share)
    out = shared(torch.randn(2, 5, 8))
    gc.collect()
    alive = [r for r in made if r() is not None]
    assert len(made) == 4  # input layer, attention's two projections (a leaf), head: once each
    # The control keeps three: the input layer saves no weight (its input needs no gradient);
    # attention saves views of its projections, the head weight.t().
    assert len(alive) == (0 if regenerate else 3)
    out.sum().backward()  # made again, one at a time, where backward needs them
    assert len(made) == (7 if regenerate else 4)
    assert shared.ssnfx.g0.store.grad is not None


def test_store_gradient_arrives_once_per_step():
    torch.manual_seed(0)
    counts = {}
    for generation in ("batched", "jit"):
        shared = ssnfx.share(SmallCNN(), 0.1, ssnfx.ShareConfig(generation=generation))
        store = shared.ssnfx.g0.store
        calls = []
        store.register_post_accumulate_grad_hook(lambda p: calls.append(1))
        shared(torch.randn(4, 1, 8, 8)).sum().backward()
        counts[generation] = len(calls)
    assert counts == {"batched": 1, "jit": 1}


def test_jit_trains_saves_loads_and_runs_without_grad(tmp_path):
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    losses = {}
    for generation in ("batched", "jit"):
        torch.manual_seed(0)
        shared = ssnfx.share(SmallCNN(), 0.1, ssnfx.ShareConfig(generation=generation))
        opt = torch.optim.SGD(shared.parameters(), lr=0.02)
        losses[generation] = []
        for _ in range(5):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(shared(x), y)
            loss.backward()
            opt.step()
            losses[generation].append(float(loss))
    assert losses["jit"][-1] < losses["jit"][0]
    assert losses["jit"] == pytest.approx(losses["batched"], rel=1e-4)
    ssnfx.save(shared, tmp_path / "jit.pt")
    loaded = ssnfx.load(SmallCNN(), tmp_path / "jit.pt").eval()
    assert loaded.ssnfx.plan.options.generation == "jit"
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), shared.eval()(x))
    with pytest.raises(ssnfx.PlanError, match="generation must be one of"):
        ssnfx.ShareConfig(generation="lazy")


def test_jit_under_bf16_autocast_matches_the_batched_mode():
    x = torch.randn(4, 1, 8, 8)
    grads = {}
    for generation in ("batched", "jit"):
        torch.manual_seed(0)
        shared = ssnfx.share(SmallCNN(), 0.1, ssnfx.ShareConfig(generation=generation))
        with torch.autocast("cpu", torch.bfloat16):
            out = shared(x)
        out.float().square().mean().backward()
        store = shared.ssnfx.g0.store
        assert out.dtype == torch.bfloat16 and store.grad.dtype == torch.float32
        grads[generation] = store.grad.flatten()
    assert torch.cosine_similarity(grads["jit"], grads["batched"], dim=0) > 0.99


def test_jit_from_the_meta_device():
    """A model shared on the meta device (nothing allocated) is generated just in time once
    materialised: the block indices the mode reads are kept as ints, never read off meta."""
    from ssnfx.core.initialization import initialize

    with torch.device("meta"):
        net = nn.Sequential(*[nn.Linear(64, 64) for _ in range(4)])
    shared = ssnfx.share(net, 0.9, ssnfx.ShareConfig(generation="jit"))
    assert shared.ssnfx.g0.store.is_meta and shared.ssnfx.g0._buckets[0].count > 0
    assert initialize(shared.to_empty(device="cpu")) == []
    shared(torch.randn(2, 64)).sum().backward()
    assert torch.isfinite(shared.ssnfx.g0.store.grad).all()


def test_refine_measures_just_in_time_weights_too():
    """Refine (SWN Eq. 3) reads each weight's gradient through the generator's hook: the
    just-in-time mode calls it as the batched one does, so both untie the same rows."""
    results = {}
    for generation in ("batched", "jit"):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(),
                            nn.Linear(8, 8))
        cfg = ssnfx.ShareConfig(method="swn", options={"hard_sharing": True}, generation=generation)
        shared = ssnfx.share(net, 0.9, cfg)
        data = [(torch.randn(16, 8), torch.randn(16, 8)) for _ in range(4)]
        result = ssnfx.refine(shared, data, nn.functional.mse_loss, steps=4, beta=0.99)
        results[generation] = result.similarity
    assert results["jit"] and results["jit"].keys() == results["batched"].keys()
    for key, sim in results["batched"].items():
        assert torch.allclose(torch.tensor(results["jit"][key]), torch.tensor(sim), atol=1e-3)


def test_jit_under_torch_compile_matches_eager():
    """torch.compile runs a just-in-time model with graph breaks around the token (an
    autograd.Function with a side effect on the step's state, which one graph cannot hold:
    fullgraph=True wants the batched mode); outputs and every gradient agree with eager over
    two steps, the store's gradient included."""
    torch.manual_seed(0)
    shared = ssnfx.share(AttnNet(), 0.3, ssnfx.ShareConfig(generation="jit"))
    eager, module = copy.deepcopy(shared), copy.deepcopy(shared)
    compiled = torch.compile(module)
    for step in range(2):
        x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(step))
        out_e, out_c = eager(x), compiled(x)
        torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
        out_e.square().sum().backward()
        out_c.square().sum().backward()
    grads = {n: p.grad for n, p in module.named_parameters()}
    assert grads["ssnfx.g0.store"] is not None
    for n, p in eager.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def _auto(make, budget, config, path):
    """A model in the "auto" mode whose threshold makes the larger half of the shared weights
    just in time, through ``path``: the user's class (bind, what share returns) or the graph
    (rewrite)."""
    from ssnfx.passes.rewriting import bind, rewrite

    torch.manual_seed(0)
    model = make().double()
    gm = ssnfx.trace(model)
    plan = ssnfx.make_plan(gm, budget, ssnfx.ShareConfig(generation="auto", **config))
    sizes = sorted(s.numel for s in plan.slots if s.shared)
    plan.options = dataclasses.replace(plan.options, jit_numel=sizes[len(sizes) // 2])
    jit = [n for g in plan.groups for n in plan.just_in_time(g)]
    assert 0 < len(jit) < len(sizes)
    return (bind(model, gm, plan) if path == "bind" else rewrite(gm, plan)), jit


@pytest.mark.parametrize("path", ["bind", "rewrite"])
@pytest.mark.parametrize("case", ["cnn ssn", "cnn swn hard", "resized swn", "attention leaf",
                                  "tied across a leaf"])
def test_auto_makes_large_weights_just_in_time_and_computes_the_same(case, path):
    make, inputs, budget, config = CASES[case]
    x = inputs()
    _, out, grads = _step(make, x, budget, config, "batched")
    shared, jit = _auto(make, budget, config, path)
    generator = shared.ssnfx.g0
    assert {generator.names[i] for i in generator._jit} == set(jit) & set(generator.names)
    rows = {line.split()[0]: line
            for line in ssnfx.report(shared.ssnfx.plan).splitlines() if line.strip()}
    assert all(rows[n].endswith("just in time") for n in jit)  # the report says which
    if path == "rewrite":  # both kinds of generation in one graph
        targets = [n.target for n in shared.graph.nodes]
        assert ssnfx.core.jit.weight in targets and "ssnfx.g0" in targets
    out_auto = shared(x)
    out_auto.square().mean().backward()
    torch.testing.assert_close(out_auto, out, rtol=1e-10, atol=1e-12)
    auto_grads = {n: p.grad for n, p in shared.named_parameters() if p.grad is not None}
    assert auto_grads.keys() == grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(auto_grads[name], g, rtol=1e-9, atol=1e-12, msg=name)
    torch.testing.assert_close(ssnfx.fold(shared)(x), out, rtol=1e-10, atol=1e-12)
