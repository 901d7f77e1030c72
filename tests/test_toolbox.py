"""A shared model works wherever PyTorch users put an nn.Module: torch.compile, dtypes, autocast,
the meta device, deepcopy, train/eval, freezing, activation checkpointing and resuming from a
checkpoint in a fresh process. DistributedDataParallel and FSDP are in tests/test_distributed.py.

Every test compares numbers (outputs, gradients, store values, losses) with explicit tolerances.
"""
from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import ssnfx
import ssnfx.core.generator
from ssnfx.core.initialization import initialize
from ssnfx.core.layer_kinds import kind_of

from helpers import count_params
from models import AttnNet, GRUNet, SmallCNN, ThreeBranches, conflict_data


def _sgd_steps(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
               lr: float = 0.05) -> list[float]:
    """Plain SGD on mean-squared error, one step per batch; the losses."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for x, y in batches:
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ---- torch.compile -------------------------------------------------------------------------------


def test_compile_matches_eager_and_trains():
    """One graph (fullgraph=True: the generators trace without a break); outputs, gradients and
    three SGD steps agree with eager to float32 rounding (inductor reorders sums)."""
    batches = conflict_data(batches=4)
    shared = ssnfx.share(ThreeBranches(), 0.5)
    eager, module = copy.deepcopy(shared), copy.deepcopy(shared)
    compiled = torch.compile(module, fullgraph=True)  # trains module's own parameters
    x, y = batches[0]
    out_e, out_c = eager(x), compiled(x)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
    F.mse_loss(out_e, y).backward()
    F.mse_loss(out_c, y).backward()
    ge, gc = _grads(eager), _grads(module)
    assert ge.keys() == gc.keys() and any(k.startswith("ssnfx.") for k in ge)
    for k in ge:
        torch.testing.assert_close(gc[k], ge[k], rtol=1e-4, atol=1e-5, msg=k)
    eager.zero_grad()
    module.zero_grad()
    steps = [batches[0]] * 3  # one batch: the loss must fall
    losses_e = _sgd_steps(eager, steps, lr=1e-3)
    losses_c = _sgd_steps(compiled, steps, lr=1e-3)
    assert losses_e[-1] < losses_e[0]  # it trains
    torch.testing.assert_close(torch.tensor(losses_c), torch.tensor(losses_e), rtol=1e-4, atol=0)
    torch.testing.assert_close(module.ssnfx.g0.store, eager.ssnfx.g0.store, rtol=1e-4, atol=1e-5)


# ---- dtypes and autocast -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-5), (torch.bfloat16, 2e-2)])
def test_to_dtype(dtype, rtol):
    """``.to(dtype)`` converts the store, coefficients and gains (index buffers stay integer); the
    model runs, trains and folds in that dtype, and agrees with float32 within ``rtol`` of the
    output scale (float64: the float32 reference's rounding; bfloat16: its 8-bit mantissa)."""
    shared = ssnfx.share(SmallCNN(), 0.2).eval()
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        ref = shared(x)
    low = copy.deepcopy(shared).to(dtype)
    g = low.ssnfx.g0
    assert {p.dtype for p in low.parameters()} == {dtype} and g.gain.dtype == dtype
    assert all(b.dtype in (torch.long, torch.int32) for n, b in g.named_buffers() if n != "gain")
    with torch.no_grad():
        out = low(x.to(dtype))
    assert out.dtype == dtype
    assert (out.double() - ref.double()).abs().max() <= rtol * ref.abs().max()
    folded = ssnfx.fold(low)
    with torch.no_grad():
        torch.testing.assert_close(folded(x.to(dtype)), out, rtol=0, atol=0)
    low.train()
    F.mse_loss(low(x.to(dtype)).float(), torch.zeros(6, 10)).backward()
    assert g.store.grad.dtype == dtype and torch.isfinite(g.store.grad).all()
    assert g.store.grad.abs().sum() > 0


def test_sharing_a_float64_model_keeps_its_dtype():
    """A model that is float64 before sharing gets a float64 store (it used to get float32,
    and its layers then failed on mixed dtypes)."""
    model = SmallCNN().double()
    shared = ssnfx.share(model, 0.2).eval()
    assert {p.dtype for p in shared.parameters()} == {torch.float64}
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    eager = copy.deepcopy(model).eval()
    eager.load_state_dict(ssnfx.fold(shared).state_dict())
    with torch.no_grad():
        torch.testing.assert_close(shared(x), eager(x), rtol=1e-12, atol=1e-12)


def test_autocast_cpu():
    """Under CPU autocast (bfloat16) the layers compute in bfloat16, the parameters and their
    gradients stay float32, and both agree with float32: outputs within 2% of their scale,
    store and coefficient gradients at cosine > 0.99."""
    shared = ssnfx.share(SmallCNN(), 0.2)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    ref = shared(x)
    F.cross_entropy(ref, y).backward()
    g32 = _grads(shared)
    shared.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = shared(x)
        loss = F.cross_entropy(out, y)
    loss.backward()
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() <= 0.02 * ref.abs().max()
    for name, p in shared.ssnfx.named_parameters():
        assert p.dtype == p.grad.dtype == torch.float32
        cos = F.cosine_similarity(p.grad.flatten(), g32[f"ssnfx.{name}"].flatten(), dim=0)
        assert cos > 0.99, (name, float(cos))


# ---- the meta device -----------------------------------------------------------------------------


def _tensors(m: nn.Module) -> list[torch.Tensor]:
    return [*m.parameters(), *m.buffers()]


@pytest.mark.parametrize("make", [SmallCNN, AttnNet])
def test_meta_device_initialisation(make):
    """Build on meta, share (nothing allocated), ``to_empty``, ``initialize``: every
    tensor is initialised; the generated weights start at the std of PyTorch's default init
    (rtol 1e-3, what the gains guarantee), the store holds the draws a CPU share makes (up to
    its scale), norms start at 1/0 with fresh running statistics, biases in the layers' default
    range; and the model trains."""
    with torch.device("meta"):
        model = make()
    shared = ssnfx.share(model, 0.3)
    assert all(t.is_meta for t in _tensors(shared))
    cpu = ssnfx.share(make(), 0.3)
    assert count_params(shared) == count_params(cpu)

    assert initialize(shared.to_empty(device="cpu")) == []
    assert all(torch.isfinite(t).all() for t in _tensors(shared) if t.is_floating_point())
    plan = shared.ssnfx.plan
    slots = {s.name: s for s in plan.slots}
    for name, w in shared.ssnfx.generate().items():
        torch.testing.assert_close(w.std().item(), kind_of(slots[name]).default_std(slots[name]),
                                   rtol=1e-3, atol=0, msg=name)
    a, b = shared.ssnfx.g0.store, cpu.ssnfx.g0.store
    torch.testing.assert_close(a * (b.norm() / a.norm()), b, rtol=1e-5, atol=1e-6)
    for s in plan.slots:
        if s.shared:
            continue
        t = shared.get_parameter(s.name)
        if s.kind in ("BatchNorm2d", "LayerNorm"):
            assert torch.all(t == (1.0 if s.role == "weight" else 0.0)), s.name
        elif s.role == "bias" and s.kind in ("Linear", "Conv2d"):
            fan_in = math.prod(slots[s.name[:-len("bias")] + "weight"].shape[1:])
            assert t.abs().max() <= 1 / math.sqrt(fan_in) and t.std() > 0, s.name
        else:  # MultiheadAttention's biases start at zero
            assert torch.all(t == 0), s.name
    for name, buf in shared.named_buffers():
        if name.endswith("running_mean"):
            assert torch.all(buf == 0)
        elif name.endswith("running_var"):
            assert torch.all(buf == 1)

    x = torch.randn(8, 1, 8, 8) if make is SmallCNN else torch.randn(8, 5, 8)
    target = torch.randn_like(shared(x))
    losses = _sgd_steps(shared, [(x, target)] * 8)
    assert losses[-1] < 0.9 * losses[0]


def test_reset_parameters_restores_the_initial_store():
    """``reset_parameters`` redraws exactly what share drew: store, coefficients and gains come
    back bit for bit after training."""
    shared = ssnfx.share(SmallCNN(), 0.2, ssnfx.ShareConfig(method="swn", combiner="linear"))
    start = copy.deepcopy(shared.ssnfx.state_dict())
    _sgd_steps(shared, [(torch.randn(4, 1, 8, 8), torch.randn(4, 10))] * 2, lr=0.5)
    assert not torch.equal(shared.ssnfx.g0.store, start["g0.store"])
    shared.ssnfx.reset_parameters()
    for k, v in shared.ssnfx.state_dict().items():
        assert torch.equal(v, start[k]), k


def test_to_meta_and_back():
    """``.to("meta")`` keeps the structure (shape inference without memory); a model moved back
    with to_empty and reset computes again."""
    shared = ssnfx.share(AttnNet(), 0.3)
    meta = copy.deepcopy(shared).to("meta")
    assert all(t.is_meta for t in _tensors(meta))
    assert meta(torch.randn(2, 5, 8, device="meta")).shape == (2, 3)
    assert initialize(meta.to_empty(device="cpu")) == []
    for k, v in meta.ssnfx.state_dict().items():  # the same draws and targets as the original
        torch.testing.assert_close(v, shared.ssnfx.state_dict()[k], rtol=0, atol=0, msg=k)


# ---- deepcopy, train/eval, freezing --------------------------------------------------------------


@pytest.mark.parametrize("make, shape", [(SmallCNN, (4, 1, 8, 8)), (GRUNet, (4, 5, 8))])
def test_deepcopy_after_training(make, shape):
    """A trained shared model (GRU leaf included: it used to keep the generated weights in its
    weight cache and refuse deepcopy) copies to an equal, independent model."""
    shared = ssnfx.share(make(), 0.3)
    x = torch.randn(*shape)
    target = torch.randn_like(shared(x))
    _sgd_steps(shared, [(x, target)])
    clone = copy.deepcopy(shared)
    for (n, a), (_, b) in zip(shared.named_parameters(), clone.named_parameters()):
        assert a is not b and torch.equal(a, b), n
    torch.testing.assert_close(clone.eval()(x), shared.eval()(x), rtol=0, atol=0)
    before = shared.ssnfx.g0.store.clone()
    _sgd_steps(clone.train(), [(x, target)])
    assert torch.equal(shared.ssnfx.g0.store, before)  # training the copy leaves the original
    assert not torch.equal(clone.ssnfx.g0.store, before)
    folded = ssnfx.fold(clone.eval())  # fold copies the model too
    torch.testing.assert_close(folded(x), clone(x), rtol=1e-5, atol=1e-5)


class ModalNet(nn.Module):
    """BatchNorm, Dropout and an auxiliary head that only exists in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(12, 24)
        self.bn = nn.BatchNorm1d(24)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(24, 4)
        self.aux = nn.Linear(24, 4)

    def forward(self, x: torch.Tensor) -> Any:
        h = self.drop(torch.relu(self.bn(self.body(x))))
        if self.training:
            return self.head(h), self.aux(h)
        return self.head(h)


def test_train_eval_switch_matches_the_model():
    """``train()``/``eval()`` switch BatchNorm, Dropout and the mode-dependent graph as in the
    original model: with the generated weights loaded into it, the original gives the same
    outputs (atol 1e-6) in both modes, and the same running statistics after two train steps."""
    model = ModalNet()
    shared = ssnfx.share(model, 0.5)
    eager = copy.deepcopy(model)
    eager.load_state_dict(ssnfx.fold(shared.eval()).state_dict())
    x = torch.randn(16, 12)
    for mode in (True, False, True):
        shared.train(mode)
        eager.train(mode)
        assert all(m.training == mode for m in shared.modules())
        for _ in range(2):
            torch.manual_seed(1)  # the same dropout masks
            out_s = shared(x)
            torch.manual_seed(1)
            out_e = eager(x)
            assert isinstance(out_s, tuple) == mode
            torch.testing.assert_close(out_s, out_e, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(shared.bn.running_mean, eager.bn.running_mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(shared.bn.running_var, eager.bn.running_var, rtol=0, atol=1e-6)
    assert shared.bn.num_batches_tracked == eager.bn.num_batches_tracked == 4


def test_requires_grad_freezing():
    """``requires_grad_(False)`` freezes the whole model (no graph is built), or the store only:
    then three steps train the private parameters and leave store and coefficients bit for bit;
    freezing the coefficients only leaves them while the store trains."""
    shared = ssnfx.share(SmallCNN(), 0.2)
    x, target = torch.randn(4, 1, 8, 8), torch.randn(4, 10)
    frozen = copy.deepcopy(shared).requires_grad_(False)
    assert not frozen(x).requires_grad

    store_frozen = copy.deepcopy(shared)
    store_frozen.ssnfx.requires_grad_(False)
    before = copy.deepcopy(store_frozen.state_dict())
    _sgd_steps(store_frozen, [(x, target)] * 3)
    after = store_frozen.state_dict()
    for k in before:
        if k.startswith("ssnfx."):
            assert torch.equal(after[k], before[k]), k
    assert not torch.equal(after["fc.bias"], before["fc.bias"])

    coef_frozen = copy.deepcopy(shared)
    coef_frozen.ssnfx.g0.alpha.requires_grad_(False)
    alpha, store = coef_frozen.ssnfx.g0.alpha.clone(), coef_frozen.ssnfx.g0.store.clone()
    _sgd_steps(coef_frozen, [(x, target)] * 3)
    assert torch.equal(coef_frozen.ssnfx.g0.alpha, alpha)
    assert not torch.equal(coef_frozen.ssnfx.g0.store, store)


# ---- activation checkpointing --------------------------------------------------------------------


class Outer(nn.Module):
    """A shared model used as a block of a bigger eager model, under activation checkpointing."""

    def __init__(self, body: nn.Module, ckpt: bool) -> None:
        super().__init__()
        self.body = body
        self.out = nn.Linear(3, 2)
        self.ckpt = ckpt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = checkpoint(self.body, x, use_reentrant=False) if self.ckpt else self.body(x)
        return self.out(torch.tanh(h))


def test_activation_checkpointing_around_shared_layers():
    """``checkpoint(shared, x, use_reentrant=False)``: the generators and layers run again in
    backward (the generator is called twice), fewer tensors are kept for backward, and loss and
    gradients equal those without checkpointing (atol 1e-7)."""
    shared = ssnfx.share(AttnNet(), 0.3)
    plain, ckpt = Outer(copy.deepcopy(shared), False), Outer(copy.deepcopy(shared), True)
    ckpt.out.load_state_dict(plain.out.state_dict())
    x, y = torch.randn(4, 5, 8), torch.randn(4, 2)
    calls, saved = {}, {}
    for name, model in (("plain", plain), ("ckpt", ckpt)):
        calls[name] = 0

        def count(*_: Any, name: str = name) -> None:
            calls[name] += 1

        model.body.ssnfx.g0.register_forward_hook(count)
        n = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal n
            n += 1
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.mse_loss(model(x), y)
        saved[name] = n
        loss.backward()
        assert calls[name] == (2 if name == "ckpt" else 1)
    assert saved["ckpt"] < saved["plain"] / 2, saved
    torch.testing.assert_close(F.mse_loss(ckpt(x), y), F.mse_loss(plain(x), y), rtol=0, atol=1e-7)
    gp, gc = _grads(plain), _grads(ckpt)
    assert gp.keys() == gc.keys()
    for k in gp:
        torch.testing.assert_close(gc[k], gp[k], rtol=0, atol=1e-7, msg=k)


# ---- resuming in a fresh process -----------------------------------------------------------------

STEPS, SPLIT = 6, 3


def _resume_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two fixed batches, alternating: the same order in every process, and learnable."""
    gen = torch.Generator().manual_seed(3)
    two = [(torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen))
           for _ in range(2)]
    return [two[i % 2] for i in range(STEPS)]


def _adam_steps(shared: nn.Module, opt: torch.optim.Optimizer, batches: list[Any]) -> list[float]:
    losses = []
    for x, y in batches:
        loss = F.cross_entropy(shared(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def resume_second_half(path: str) -> list[float]:
    """What the fresh process runs: load the checkpoint and its optimizer state, train on."""
    shared, extra = ssnfx.load(SmallCNN(), path, return_extra=True)
    opt = torch.optim.Adam(shared.parameters(), lr=1e-2)
    opt.load_state_dict(extra["optimizer"])
    assert extra["step"] == SPLIT
    return _adam_steps(shared.train(), opt, _resume_batches()[extra["step"]:])


def test_resume_in_a_fresh_process(tmp_path):
    """Save after 3 Adam steps (plan + state_dict + optimizer state as ``extra``), load in a new
    ``python -c`` process, train 3 more: the losses equal those of an uninterrupted run
    (rtol 1e-5), and the extras come back from ssnfx.load and ssnfx.checkpoint.read."""
    batches = _resume_batches()
    shared = ssnfx.share(SmallCNN(), 0.2)
    opt = torch.optim.Adam(shared.parameters(), lr=1e-2)
    first = _adam_steps(shared, opt, batches[:SPLIT])
    path = tmp_path / "mid.pt"
    ssnfx.save(shared, path, extra={"optimizer": opt.state_dict(), "step": SPLIT})
    rest = _adam_steps(shared, opt, batches[SPLIT:])
    assert rest[-1] < first[0]

    _, _, extra = ssnfx.checkpoint.read(path)
    again, extra2 = ssnfx.load(SmallCNN(), path, return_extra=True)
    for e in (extra, extra2):
        assert e["step"] == SPLIT and len(e["optimizer"]["state"]) == len(list(again.parameters()))
        assert all(s["exp_avg"].shape == p.shape for s, p in
                   zip(e["optimizer"]["state"].values(), again.parameters()))

    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"from test_toolbox import resume_second_half; "
            f"print(json.dumps(resume_second_half({str(path)!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = json.loads(done.stdout.strip().splitlines()[-1])
    torch.testing.assert_close(torch.tensor(resumed), torch.tensor(rest), rtol=1e-5, atol=0)
