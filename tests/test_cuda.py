"""The toolbox on a CUDA GPU: share, an Adam step, fold, export, save/load, bf16 autocast and
torch.compile, with the model, its store and its inputs on the device.

Marked ``cuda`` and skipped when ``torch.cuda.is_available()`` is False (at collection, before
any model is built), so the default CPU suite only reports the skip. On a GPU machine:
``python -m pytest -m cuda tests/test_cuda.py`` (``benchmarks/gpu_check.sh`` runs it).
``SSNFX_TEST_DEVICE=cpu`` runs the same tests on the CPU, to check their logic without a GPU.

Tolerances: TF32 is switched off (matmul and cuDNN) and cuDNN made deterministic, so the
comparisons that hold exactly on the CPU hold here; fold and exports are checked at 1e-4, since
CUDA kernels may order sums differently from one launch configuration to the next, and the
store's gradient is summed with atomics (same values, not always the same order).
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import ssnfx
from ssnfx.deploy import export_pt2, export_torchscript

from helpers import check_pipeline, count_params
from models import AttnNet, SmallCNN, ThreeBranches, conflict_data

DEVICE = os.environ.get("SSNFX_TEST_DEVICE", "cuda")

if DEVICE == "cuda" and not torch.cuda.is_available():
    # At collection: nothing below is imported, built or parametrised on a machine without CUDA.
    pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False); "
                "benchmarks/gpu_check.sh runs these on one", allow_module_level=True)

pytestmark = pytest.mark.cuda

#: Output and fold tolerance on the device (see the module docstring).
ATOL = 1e-4


def _resnet18() -> nn.Module:
    return torchvision.models.resnet18(num_classes=10)


#: name -> (model factory, input factory, budget): a small CNN, a transformer-ish model
#: (MultiheadAttention, a leaf fed through functional_call, with LayerNorm) and a torchvision
#: ResNet at a small input. Factories, so that nothing is built at collection.
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.Tensor], float]] = {
    "small_cnn": (SmallCNN, lambda: torch.randn(8, 1, 8, 8), 0.2),
    "attn_net": (AttnNet, lambda: torch.randn(4, 5, 8), 0.3),
    "resnet18": (_resnet18, lambda: torch.randn(4, 3, 32, 32), 0.1),
}


@pytest.fixture(autouse=True)
def _exact_fp32() -> Iterator[None]:
    """TF32 off (matmul and cuDNN) and deterministic cuDNN for each test, restored after."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True,
                                        allow_tf32=False):
            yield
    finally:
        torch.set_float32_matmul_precision(precision)


def _on_device(module: nn.Module) -> None:
    """Every parameter and buffer of ``module`` lives on DEVICE."""
    wrong = [n for n, t in [*module.named_parameters(), *module.named_buffers()]
             if t.device.type != DEVICE]
    assert not wrong, f"not on {DEVICE}: {wrong[:5]}"


def _case(name: str) -> tuple[nn.Module, torch.Tensor, float]:
    make, inputs, budget = CASES[name]
    return make().to(DEVICE), inputs().to(DEVICE), budget


def _store_grads(shared: nn.Module) -> dict[str, torch.Tensor]:
    return {n: g.store.grad for n, g in shared.ssnfx.named_children()}


# ---- share, a training step, fold, save/load -----------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_pipeline_on_device(name, tmp_path):
    """check_pipeline with the model and inputs on the device: trace, rewrite (budget), fold
    (strict load into a copy of the model on the device), an SGD step that reaches every store,
    and save/load into a copy on the device, exact."""
    model, x, budget = _case(name)
    shared, folded = check_pipeline(model, (x,), budget, atol=ATOL, backward=True,
                                    checkpoint=tmp_path / "shared.safetensors")
    _on_device(shared)
    _on_device(folded)


@pytest.mark.parametrize("name", list(CASES))
def test_adam_steps_then_fold(name):
    """``share`` on a model on the device creates its store there; three Adam steps on one batch
    lower the loss, each store gets a finite, non-zero gradient on the device and moves; the
    folded model then equals the shared one, and so does a fresh model (built on the CPU, moved
    to the device) that loads the folded state_dict strictly."""
    model, x, budget = _case(name)
    shared = ssnfx.share(model, budget)
    _on_device(shared)
    assert count_params(shared) <= shared.ssnfx.plan.budget
    before = {n: g.store.detach().clone() for n, g in shared.ssnfx.named_children()}
    opt = torch.optim.Adam(shared.parameters(), lr=1e-3)
    target = torch.randn_like(shared(x))
    losses = []
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(shared(x), target)
        loss.backward()
        for n, grad in _store_grads(shared).items():
            assert grad is not None, f"store {n} received no gradient"
            assert grad.device.type == DEVICE, (n, grad.device)
            assert torch.isfinite(grad).all() and grad.abs().sum() > 0, n
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0], losses
    for n, g in shared.ssnfx.named_children():
        assert not torch.equal(g.store, before[n]), f"store {n} did not move"

    shared.eval()
    folded = ssnfx.fold(shared)
    _on_device(folded)
    fresh = CASES[name][0]().to(DEVICE).eval()
    fresh.load_state_dict(folded.state_dict(), strict=True)
    with torch.no_grad():
        out = shared(x)
        torch.testing.assert_close(folded(x), out, atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(fresh(x), out, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("name", list(CASES))
def test_jit_generation_matches_batched_on_device(name):
    """Just-in-time generation on the device (ssnfx.core.jit: weights made before their layer and
    again in backward): the outputs and every gradient of a step equal the batched mode's, the
    store's gradient on the device. In float64: the two modes sum in other orders, and in fp32
    ResNet's BatchNorm over 4 images at 1x1 amplifies that to 1% of its gradients (1e-12 in
    float64)."""
    grads, outs = {}, {}
    for generation in ("batched", "jit"):
        torch.manual_seed(0)
        model, x, budget = _case(name)
        model, x = model.double(), x.double()
        shared = ssnfx.share(model, budget, ssnfx.ShareConfig(generation=generation))
        _on_device(shared)
        out = shared(x)
        out.square().mean().backward()
        outs[generation] = out.detach()
        grads[generation] = {n: p.grad for n, p in shared.named_parameters()}
    torch.testing.assert_close(outs["jit"], outs["batched"], rtol=1e-9, atol=1e-12)
    assert grads["jit"].keys() == grads["batched"].keys()
    for n, g in grads["batched"].items():
        assert grads["jit"][n].device.type == DEVICE, n
        torch.testing.assert_close(grads["jit"][n], g, rtol=1e-8, atol=1e-11, msg=n)


@pytest.mark.parametrize("name", list(CASES))
def test_save_load_onto_a_fresh_model_on_device(name, tmp_path):
    """ssnfx.save on the device, ssnfx.load into a fresh model moved to the device: the same
    plan, state_dict and outputs; the optimizer state travels as an extra, and the next Adam
    step of the resumed model equals the uninterrupted one's."""
    model, x, budget = _case(name)
    shared = ssnfx.share(model, budget)
    opt = torch.optim.Adam(shared.parameters(), lr=1e-3)
    out = shared(x)
    F.mse_loss(out, torch.zeros_like(out)).backward()
    opt.step()
    path = tmp_path / "step.pt"
    ssnfx.save(shared, path, extra={"optimizer": opt.state_dict()})

    fresh = CASES[name][0]().to(DEVICE)
    again, extra = ssnfx.load(fresh, path, return_extra=True)
    _on_device(again)
    assert again.ssnfx.plan == shared.ssnfx.plan
    mine = shared.state_dict()
    assert again.state_dict().keys() == mine.keys()
    for k, v in again.state_dict().items():
        assert torch.equal(v, mine[k]), k
    shared.eval()
    again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), shared(x), atol=0, rtol=0)

    opt_again = torch.optim.Adam(again.parameters(), lr=1e-3)
    opt_again.load_state_dict(extra["optimizer"])
    for m, o in ((shared.train(), opt), (again.train(), opt_again)):
        o.zero_grad(set_to_none=True)
        out = m(x)
        F.mse_loss(out, torch.zeros_like(out)).backward()
        o.step()
    for (k, a), (_, b) in zip(again.named_parameters(), shared.named_parameters()):
        # Atomics may sum the store's gradient in another order: equal up to float32 rounding.
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=k)


# ---- export --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_export_on_device(name, tmp_path):
    """The folded model exports with example inputs on the device, to torch.export (.pt2) and
    TorchScript (.pt), each checked by ssnfx against the folded model; the reloaded programs run
    on the device and reproduce it."""
    model, x, budget = _case(name)
    folded = ssnfx.fold(ssnfx.share(model, budget).eval())
    with torch.no_grad():
        expected = folded(x)
    export_pt2(folded, (x,), tmp_path / "m.pt2", atol=ATOL, rtol=ATOL)
    export_torchscript(folded, (x,), tmp_path / "m.pt", atol=ATOL, rtol=ATOL)
    with torch.no_grad():
        for out in (torch.export.load(str(tmp_path / "m.pt2")).module()(x),
                    torch.jit.load(str(tmp_path / "m.pt"))(x)):
            assert out.device.type == DEVICE
            torch.testing.assert_close(out, expected, atol=ATOL, rtol=ATOL)


# ---- bf16 autocast -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["small_cnn", "attn_net"])
def test_autocast_bf16(name):
    """Under ``torch.autocast(DEVICE, torch.bfloat16)`` the layers compute in bfloat16, the
    parameters and their gradients stay float32, and both agree with float32: outputs within 3%
    of their scale, store and coefficient gradients at cosine > 0.98; an Adam step under
    autocast keeps every parameter float32 and finite."""
    model, x, budget = _case(name)
    shared = ssnfx.share(model, budget)
    y = torch.randint(0, 3 if name == "attn_net" else 10, (x.shape[0],), device=DEVICE)
    ref = shared(x)
    F.cross_entropy(ref, y).backward()
    g32 = {n: p.grad.clone() for n, p in shared.ssnfx.named_parameters()}
    shared.zero_grad(set_to_none=True)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        out = shared(x)
        loss = F.cross_entropy(out, y)
    loss.backward()
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() <= 0.03 * ref.abs().max()
    for n, p in shared.ssnfx.named_parameters():
        assert p.dtype == p.grad.dtype == torch.float32, (n, p.dtype, p.grad.dtype)
        assert p.grad.device.type == DEVICE
        cos = F.cosine_similarity(p.grad.flatten(), g32[n].flatten(), dim=0)
        assert cos > 0.98, (n, float(cos))
    torch.optim.Adam(shared.parameters(), lr=1e-3).step()
    for n, p in shared.named_parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all(), n


# ---- torch.compile -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["three_branches", "small_cnn"])
def test_compile_matches_eager(name):
    """``torch.compile(fullgraph=True)`` of a shared model on the device (one graph: the
    generators trace without a break): outputs, gradients and three SGD steps agree with eager
    to float32 rounding (inductor fuses and reorders sums)."""
    if name == "three_branches":
        batches = [(x.to(DEVICE), y.to(DEVICE)) for x, y in conflict_data(batches=1)]
        shared = ssnfx.share(ThreeBranches().to(DEVICE), 0.5)
    else:
        model, x, budget = _case(name)
        batches = [(x, torch.randn(x.shape[0], 10, device=DEVICE))]
        shared = ssnfx.share(model, budget)
    eager, module = copy.deepcopy(shared), copy.deepcopy(shared)
    compiled = torch.compile(module, fullgraph=True)  # trains module's own parameters
    x, y = batches[0]
    out_e, out_c = eager(x), compiled(x)
    torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-5)
    F.mse_loss(out_e, y).backward()
    F.mse_loss(out_c, y).backward()
    ge = {n: p.grad for n, p in eager.named_parameters() if p.grad is not None}
    gc = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
    assert ge.keys() == gc.keys() and any(k.startswith("ssnfx.") for k in ge)
    for k in ge:
        torch.testing.assert_close(gc[k], ge[k], rtol=1e-3, atol=1e-5, msg=k)
    losses = {}
    for label, m in (("eager", eager), ("compiled", compiled)):
        opt = torch.optim.SGD(m.parameters(), lr=1e-3)
        losses[label] = []
        for _ in range(3):  # one batch: the loss must fall
            opt.zero_grad()
            loss = F.mse_loss(m(x), y)
            loss.backward()
            opt.step()
            losses[label].append(float(loss.detach()))
    assert losses["eager"][-1] < losses["eager"][0], losses
    torch.testing.assert_close(torch.tensor(losses["compiled"]), torch.tensor(losses["eager"]),
                               rtol=1e-4, atol=0)

