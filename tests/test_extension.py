"""Extending ssnfx in one file: a combiner and an export format defined here alone, registered,
and used through share, a training step, fold and export."""
import copy
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

import ssnfx
import ssnfx.core.combiners
from ssnfx.deploy import EXPORT_FORMATS, ExportFormat, register_export_format

from helpers import count_params
from models import SmallCNN


class Tempered(ssnfx.core.combiners.Combiner):
    """A softmax of learned logits at temperature 0.5, plus one learned temperature offset per
    group: not one of the papers' combiners."""

    name = "tempered"
    learned = True
    row_parameters = ("logits",)

    def coefficient_params(self, rows: int, p: int, emb_dim: int) -> int:
        return rows * p + 1

    def create(self, gen: nn.Module, rows: int, p: int, emb_dim: int,
               factory: dict[str, Any]) -> None:
        gen.logits = nn.Parameter(torch.empty(rows, p, **factory))
        gen.offset = nn.Parameter(torch.empty(1, **factory))

    def init(self, gen: nn.Module, rows: int, p: int, rng: torch.Generator) -> None:
        gen.logits.copy_(torch.randn(rows, p, generator=rng))
        gen.offset.zero_()

    def mix(self, gen: nn.Module, coef: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        logits = gen.logits.index_select(0, coef) / (0.5 + gen.offset.abs())
        return torch.softmax(logits.masked_fill(kept == 0, float("-inf")), dim=1)


def _write(model: nn.Module, inputs: tuple, path: str) -> None:
    torch.save(model.state_dict(), path)


def test_a_combiner_and_an_export_format_defined_here(tmp_path):
    ssnfx.core.combiners.register_combiner(Tempered())
    fmt = register_export_format(ExportFormat("weights", ".sd", _write, None))
    try:
        model = SmallCNN()
        shared = ssnfx.share(model, 0.3, ssnfx.ShareConfig(combiner="tempered"))
        # The plan counts the coefficients with the combiner that creates them.
        plan = shared.ssnfx.plan
        assert count_params(shared) == plan.shared_params <= plan.budget
        assert 0.95 * plan.budget <= count_params(shared)
        assert shared.ssnfx.g0.offset.numel() == 1

        x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
        opt = torch.optim.SGD(shared.parameters(), lr=0.5)
        before = shared(x).detach()
        F.cross_entropy(shared(x), y).backward()
        assert shared.ssnfx.g0.logits.grad.abs().sum() > 0 and shared.ssnfx.g0.offset.grad \
            is not None
        opt.step()
        assert not torch.allclose(shared(x), before)

        folded = ssnfx.fold(shared.eval())
        torch.testing.assert_close(folded(x), shared(x), rtol=1e-5, atol=1e-5)

        def load(path: str) -> nn.Module:
            again = copy.deepcopy(folded)
            again.load_state_dict(torch.load(path, weights_only=True))
            return again

        register_export_format(ExportFormat("weights", ".sd", _write, load))
        ssnfx.export(folded, x, tmp_path / "model.sd")
        SmallCNN().load_state_dict(torch.load(tmp_path / "model.sd", weights_only=True))

        ssnfx.save(shared, tmp_path / "c.pt")  # the plan names the combiner; load finds it
        again = ssnfx.load(SmallCNN(), tmp_path / "c.pt").eval()
        torch.testing.assert_close(again(x), shared(x))
    finally:
        ssnfx.core.combiners.COMBINER_REGISTRY.pop("tempered")
        EXPORT_FORMATS.pop(fmt.name)
