import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

import ssnfx
import ssnfx.core.config

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
    # (SWN's tile fixed: the automatic one changes with the budget, and with it the layout.)
    cfg = ssnfx.ShareConfig(method=method, combiner=combiner, strategy="single",
                            options={"tile": 0} if method == "swn" else {})
    shared = ssnfx.share(_stack(n), budget=1.5, config=cfg)  # >= P blocks for all
    with _CountOps() as ops:
        weights = shared.ssnfx.g0()
    assert len(weights) == n
    return ops.count, any(b.dense for b in shared.ssnfx.g0._buckets)


@pytest.mark.parametrize("method", ["ssn", "swn"])
@pytest.mark.parametrize("combiner", ssnfx.core.config.COMBINERS)
def test_generation_is_batched(method, combiner):
    """More alike layers cost no more ops: no loop per layer, on either generation path (one
    matmul while the store holds few blocks per candidate, else one gather per candidate)."""
    by_path: dict[bool, list[tuple[int, int]]] = {}
    for n in (4, 8, 16, 32, 64):
        count, dense = _ops(n, method, combiner)
        by_path.setdefault(dense, []).append((n, count))
    for dense, counts in by_path.items():  # counts compare on the same path only
        # (+1: viewing the store as blocks takes a slice when the block size does not divide it)
        assert max(c for _, c in counts) <= min(c for _, c in counts) + 1, (dense, counts)


@pytest.mark.parametrize("method", ["ssn", "swn"])
@pytest.mark.parametrize("combiner", ssnfx.core.config.COMBINERS)
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
@pytest.mark.parametrize("combiner", ssnfx.core.config.COMBINERS)
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


def test_every_generation_path_has_exact_gradients():
    # One group's buckets on all three paths, several block sizes from one store, candidates
    # repeating within and across instances (a block read twice must get both gradients),
    # checked against finite differences.
    from ssnfx.core.bucket_ops import (
        GATHER,
        RESIZE,
        UPSAMPLE,
        WINDOW,
        GenerateBuckets,
        lerp_weights,
    )

    torch.manual_seed(0)
    store = torch.randn(60, dtype=torch.double, requires_grad=True)
    mix = torch.randn(11, 3, dtype=torch.double, requires_grad=True)
    specs = ((GATHER, 0, 2, 3, 2, 3, 0, 0),      # 2 instances of 2 x 3, 3 candidates each
             (WINDOW, 2, 3, 2, 1, 7, 1, 4),      # 3 of 1 x 7 from blocks 1-4
             (UPSAMPLE, 5, 1, 1, 4, 5, 2, 3),    # 1 of 4 x 5 from the store's first 2 x 3
             (UPSAMPLE, 6, 2, 1, 5, 4, 2, 2),    # 2 of 5 x 4 from its first 2 x 2
             (RESIZE, 8, 2, 3, 3, 2, 4, 5),      # 2 of 3 x 2 mixing 3 candidates of 4 x 5
             (RESIZE, 10, 1, 3, 6, 9, 4, 5))     # 1 of 6 x 9 from the same three
    up1, up2 = lerp_weights(2, 4), lerp_weights(2, 5)
    tensors = (torch.tensor([[0, 1, 2], [2, 2, 4]]), torch.tensor([[0, 1], [2, 3], [1, 1]]),
               up1[0], up1[1].double(), up2[0], up2[1].double())
    assert torch.autograd.gradcheck(lambda s, m: GenerateBuckets.apply(s, m, specs, *tensors),
                                     (store, mix))
    gather, window, up, ups, down, resized = GenerateBuckets.apply(store, mix, specs, *tensors)
    for out, rows, (h, w) in ((down, mix[8:10], (3, 2)), (resized, mix[10:11], (6, 9))):
        candidates = torch.nn.functional.interpolate(  # three chunks of 20, each 4 x 5
            store.view(3, 1, 4, 5), size=(h, w), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out, rows @ candidates.view(3, h * w))
    torch.testing.assert_close(gather[1], mix[1, 0] * store[12:18] + mix[1, 1] * store[12:18]
                               + mix[1, 2] * store[24:30])
    torch.testing.assert_close(window[2], (mix[4, 0] + mix[4, 1]) * store[14:21])
    bilinear = torch.nn.functional.interpolate(store[:4].view(1, 1, 2, 2), size=(5, 4),
                                               mode="bilinear", align_corners=False)
    torch.testing.assert_close(ups, mix[6:8, :1] * bilinear.view(1, 20))


def _plain_weights(g) -> list[torch.Tensor]:
    """A group's weights the plain way, slot by slot and tile by tile, straight from the papers:
    each SuperWeight instance mixes its round-robin candidate blocks (SSN Eq. 1-2, SWN Eq. 1), or
    is the store's start bilinearly upsampled (``F.interpolate``); each slot is its tiles in
    place, times its gain. The reference for the batched generator."""
    import torch.nn.functional as F

    from ssnfx.core.selector import resize_source, select_blocks, upsample_source

    group, store = g._group, g.store
    picks = select_blocks(group.numel, group.superweights, group.candidates)
    if group.selection == "resized":  # every SuperWeight mixes the P equal candidates
        p = min(group.candidates, group.numel)
        picks = [(0, p)] * len(group.superweights)
    weights = []
    for i, name in enumerate(g.names):
        rows, cols = g._slots[name].matrix
        w = store.new_zeros(rows, cols)
        combiner = g.combiner.name
        for t in group.layout[name]:
            r, c = group.superweights[t.superweight]
            first, count = picks[t.superweight]
            used = 1 if combiner == "rr" or count == 0 else count
            if combiner == "wavg":
                mix = torch.softmax(g.phi[t.coefficients, :max(count, 1)], 0)
            elif combiner == "emb":
                mix = torch.softmax(g.proj_weight[:max(count, 1)] @ g.phi[t.coefficients]
                                    + g.proj_bias[:max(count, 1)], 0)
            elif combiner == "linear":
                mix = g.alpha[t.coefficients, :max(count, 1)]
            else:
                mix = store.new_full((used,), 1.0 if combiner == "rr" else 1.0 / used)
            if group.selection == "resized":
                chunk = group.numel // count
                a, b = resize_source(chunk, r, c)
                tile = sum(mix[j] * F.interpolate(
                    store[j * chunk:][:a * b].view(1, 1, a, b), size=(r, c), mode="bilinear",
                    align_corners=False).view(r, c) for j in range(used))
            elif count == 0:
                a, b = upsample_source(group.numel, r, c)
                tile = mix[0] * F.interpolate(store[:a * b].view(1, 1, a, b), size=(r, c),
                                              mode="bilinear", align_corners=False).view(r, c)
            else:
                blocks = group.numel // (r * c)
                tile = sum(mix[j] * store[((first + j) % blocks) * r * c:][:r * c].view(r, c)
                           for j in range(used))
            w = w.index_put((torch.arange(t.row, t.row + r).unsqueeze(1),
                             torch.arange(t.col, t.col + c)), tile)
        weights.append((w * g.gain[i]).view(g._slots[name].shape))
    return weights


def _model(name: str) -> nn.Module:
    """Convolutions of several shapes, or many alike layers between two others (the buckets
    of several instances: gathered at 3.0, upsampled together at 0.05)."""
    torch.manual_seed(0)
    if name == "cnn":
        return SmallCNN()
    return nn.Sequential(nn.Linear(8, 32), *[nn.Linear(32, 32) for _ in range(24)],
                         nn.Linear(32, 64))


@pytest.mark.parametrize("model", ["cnn", "stack"])
@pytest.mark.parametrize("budget", [0.05, 0.3, 3.0])
@pytest.mark.parametrize("method,combiner,hard,selection,tile", [
    ("ssn", "wavg", False, "blocks", None), ("ssn", "emb", False, "blocks", None),
    ("ssn", "rr", False, "blocks", None), ("ssn", "avg", False, "blocks", None),
    ("swn", "linear", False, "blocks", None), ("swn", "linear", True, "blocks", None),
    ("swn", "linear", False, "blocks", 8), ("swn", "linear", True, "blocks", 8),
    ("ssn", "emb", False, "resized", None), ("swn", "linear", True, "resized", None)])
def test_batched_generation_equals_the_plain_path(model, budget, method, combiner, hard,
                                                  selection, tile):
    """The batched generator (buckets gathered, windowed, upsampled or resized in one autograd
    function, mixing and gains for the whole group at once) gives the plain path's weights, and
    the same gradients to the store and the coefficients."""
    own = {"hard_sharing": hard, "tile": tile} if method == "swn" else {}
    cfg = ssnfx.ShareConfig(method=method, combiner=combiner, strategy="single",
                            selection=selection, options=own)
    try:  # float64 throughout, so that only the order of the arithmetic differs
        shared = ssnfx.share(_model(model).double(), budget, cfg)
    except ssnfx.BudgetError:
        pytest.skip("below this combiner's least budget")
    g = shared.ssnfx.g0
    fast, plain = g(), _plain_weights(g)
    torch.manual_seed(1)
    probes = [torch.randn_like(w) for w in fast]
    grads = {}
    for path, weights in (("fast", fast), ("plain", plain)):
        g.zero_grad(set_to_none=True)
        torch.autograd.backward(list(weights), probes)
        grads[path] = {n: p.grad.clone() for n, p in g.named_parameters() if p.grad is not None}
    for a, b in zip(fast, plain):
        a, b = a.detach(), b.detach()
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9 * float(b.abs().max()))
    assert grads["fast"].keys() == grads["plain"].keys()
    for name, grad in grads["plain"].items():
        torch.testing.assert_close(grads["fast"][name], grad, rtol=1e-7,
                                   atol=1e-9 * float(grad.abs().max()))


def test_the_plain_path_test_covers_every_generation_path():
    from ssnfx.core.bucket_ops import GATHER, RESIZE, UPSAMPLE, WINDOW

    kinds = set()
    grids = flats = 0
    for model in ("cnn", "stack"):
        for budget in (0.05, 0.3, 3.0):
            for selection in ("blocks", "resized"):
                cfg = ssnfx.ShareConfig(strategy="single", selection=selection)
                shared = ssnfx.share(_model(model), budget, cfg)
                kinds |= {(kind, n > 1) for kind, _, n, *_ in shared.ssnfx.g0._specs}
        tiled = ssnfx.share(_model(model), 0.3,
                            ssnfx.ShareConfig(method="swn", options={"tile": 8}))
        grids += sum(sb.grid is not None for sb in tiled.ssnfx.g0._slot_buckets)
        swn = ssnfx.share(_model(model), 0.3, ssnfx.ShareConfig(method="swn"))
        flats += sum(sb.flat for sb in swn.ssnfx.g0._slot_buckets)
    assert grids > 0  # slots assembled from a regular grid of tiles by one gather
    assert flats > 0  # slots of many irregular tiles, by one gather over all instances
    # every path, and the upsampled bucket both alone (scaled at its source) and with several
    assert kinds >= {(GATHER, True), (WINDOW, True), (UPSAMPLE, False), (UPSAMPLE, True),
                     (RESIZE, False), (RESIZE, True)}
