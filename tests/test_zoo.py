"""Every torchvision classification model at budget 0.1 (its own CI step: `pytest -m zoo`).

For each: it traces, the budget is met, forward and backward run, gradients reach every store,
the folded model matches the shared one, and its state_dict loads strictly into a fresh model.
"""
import gc

import pytest
import torch
import torchvision

import ssnfx

from helpers import count_params, first_tensor

MODELS = torchvision.models.list_models(module=torchvision.models)


def _input(name: str) -> torch.Tensor:
    # ViTs and MaxViT need their image size; Inception's auxiliary head needs 299.
    size = 224 if name.startswith(("vit", "maxvit")) else 299 if name == "inception_v3" else 64
    return torch.randn(2, 3, size, size)


@pytest.mark.zoo
@pytest.mark.parametrize("name", MODELS)
def test_zoo_model(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name)
    x = _input(name)
    shared = ssnfx.share(model, budget=0.1)
    budget = shared.ssnfx.plan.budget
    assert budget == int(0.1 * count_params(model))
    assert 0.95 * budget <= count_params(shared) <= budget

    shared.train()
    first_tensor(shared(x)).float().square().mean().backward()
    for g in shared.ssnfx.children():
        assert g.store.grad is not None and g.store.grad.abs().sum() > 0, g

    shared.eval()
    folded = ssnfx.fold(shared)
    with torch.no_grad():
        torch.testing.assert_close(folded(x[:1]), shared(x[:1]), rtol=1e-5, atol=1e-5)
    fresh = torchvision.models.get_model(name)
    fresh.load_state_dict(folded.state_dict(), strict=True)
    del model, shared, folded, fresh
    gc.collect()


def test_zoo_is_complete():
    """The list is the full classification zoo (so a torchvision upgrade cannot shrink it)."""
    assert len(MODELS) >= 80 and "vit_h_14" in MODELS and "regnet_y_128gf" in MODELS
