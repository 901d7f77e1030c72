import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

import ssnfx

from models import SmallCNN


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _stack(n: int) -> nn.Module:
    return nn.Sequential(*[nn.Linear(32, 32) for _ in range(n)])


def _ops(n: int, method: str, combiner: str) -> tuple[int, bool]:
    """Ops to generate a group of n alike layers at budget 1.5, and whether it used a matmul."""
    cfg = ssnfx.ShareConfig(method=method, combiner=combiner, strategy="single")
    shared = ssnfx.share(_stack(n), budget=1.5, config=cfg)  # >= P blocks for all
    with _CountOps() as ops:
        weights = shared.ssnfx.g0()
    assert len(weights) == n
    return ops.count, any(b.dense for b in shared.ssnfx.g0._buckets)


@pytest.mark.parametrize("method", ["ssn", "swn"])
@pytest.mark.parametrize("combiner", ssnfx.COMBINERS)
def test_generation_is_batched(method, combiner):
    """More alike layers cost no more ops: no loop per layer, on either generation path (one
    matmul while the store holds few blocks per candidate, else one gather per candidate)."""
    for small, large in ((4, 16), (32, 64)):
        (few, dense_few), (many, dense_many) = _ops(small, method, combiner), \
            _ops(large, method, combiner)
        assert dense_few == dense_many  # the same path, so the counts compare
        # (+1: viewing the store as blocks takes a slice when the block size does not divide it)
        assert many <= few + 1, (small, few, large, many)


@pytest.mark.parametrize("method", ["ssn", "swn"])
@pytest.mark.parametrize("combiner", ssnfx.COMBINERS)
def test_generated_weights_keep_the_layers_init_scale(method, combiner):
    model = SmallCNN()
    shared = ssnfx.share(model, 0.2, ssnfx.ShareConfig(method=method, combiner=combiner))
    weights = shared.ssnfx.generate()
    for name, w in weights.items():
        target = model.get_parameter(name).std()
        torch.testing.assert_close(w.std(), target, rtol=1e-3, atol=0)
    # The store starts at the layers' own scale, so the fixed gains stay near one and optimizers
    # see the step sizes of the unshared model.
    for g in shared.ssnfx.children():
        assert 0.1 < g.gain.min() and g.gain.max() < 10


@pytest.mark.parametrize("method", ["ssn", "swn"])
@pytest.mark.parametrize("combiner", ssnfx.COMBINERS)
def test_gradients_reach_store_and_coefficients(method, combiner):
    shared = ssnfx.share(SmallCNN(), 0.3, ssnfx.ShareConfig(method=method, combiner=combiner,
                                                           strategy="single"))
    shared(torch.randn(4, 1, 8, 8)).sum().backward()
    g = shared.ssnfx.g0
    assert g.store.grad is not None and g.store.grad.abs().sum() > 0
    learned = [p for n, p in g.named_parameters() if n != "store"]
    assert bool(learned) == (combiner in ("wavg", "emb", "linear"))
    for p in learned:
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_upsampling_when_store_is_smaller_than_a_layer():
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    shared = ssnfx.share(model, budget=0.05, config=ssnfx.ShareConfig(strategy="single"))
    g = shared.ssnfx.g0
    assert g.store.numel() < 64 * 64
    assert all(b.count == 0 for b in g._buckets)  # every SuperWeight is upsampled
    w0, w1 = g()
    assert w0.shape == (64, 64) and torch.isfinite(w0).all()
    (w0.sum() + w1.square().sum()).backward()
    assert g.store.grad.abs().sum() > 0


def test_candidates_grow_above_budget_one_so_no_parameter_is_idle():
    model = _stack(3)
    shared = ssnfx.share(model, budget=4.0, config=ssnfx.ShareConfig(strategy="single"))
    g = shared.ssnfx.g0
    assert g.store.numel() > 3 * 32 * 32 * 3
    shared(torch.randn(2, 32)).square().sum().backward()
    whole = g.store.numel() // (32 * 32) * 32 * 32  # the tail below one block is never read
    assert (g.store.grad[:whole] != 0).all()


def test_the_gather_path_has_exact_gradients():
    # Several block sizes drawn from one store, candidates repeating across instances (a block
    # read twice must get both gradients), checked against finite differences.
    from ssnfx.generator import _MixBlocks

    torch.manual_seed(0)
    store = torch.randn(30, dtype=torch.double, requires_grad=True)
    idx = [torch.tensor([[0, 1, 2], [2, 2, 4]]), torch.tensor([[0, 2], [1, 0], [3, 3]])]
    mix = [torch.randn(2, 3, dtype=torch.double, requires_grad=True),
           torch.randn(3, 2, dtype=torch.double, requires_grad=True)]
    assert torch.autograd.gradcheck(
        lambda s, a, b: _MixBlocks.apply(s, (6, 7), *idx, a, b), (store, *mix))
    out = _MixBlocks.apply(store, (6, 7), *idx, *mix)
    view = store[:28].view(4, 7)
    torch.testing.assert_close(out[1][2], (mix[1][2, 0] + mix[1][2, 1]) * view[3])
