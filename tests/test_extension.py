"""Extending ssnfx in one file: a combiner and an export format defined here alone, registered,
and used through share, a training step, fold and export."""
import copy
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ssnfx
import ssnfx.core.combiners
import ssnfx.core.methods
from ssnfx.core.plan import Slot, Tile
from ssnfx.deploy import EXPORT_FORMATS, ExportFormat, register_export_format

from helpers import check_pipeline, count_params
from models import SmallCNN


class Tempered(ssnfx.core.combiners.Combiner):
    """A softmax of learned logits at a temperature of its own (a setting, 0.5 by default),
    plus one learned temperature offset per group: not one of the papers' combiners."""

    name = "tempered"
    learned = True
    row_parameters = ("logits",)
    options = {"temperature": 0.5}

    def coefficient_params(self, rows: int, p: int, options: Mapping[str, Any]) -> int:
        return rows * p + 1

    def create(self, gen: nn.Module, rows: int, p: int, options: Mapping[str, Any],
               factory: dict[str, Any]) -> None:
        gen.logits = nn.Parameter(torch.empty(rows, p, **factory))
        gen.offset = nn.Parameter(torch.empty(1, **factory))
        gen.temperature = float(options["temperature"])

    def init(self, gen: nn.Module, rows: int, p: int, rng: torch.Generator) -> None:
        gen.logits.copy_(torch.randn(rows, p, generator=rng))
        gen.offset.zero_()

    def mix(self, gen: nn.Module, coef: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        logits = gen.logits.index_select(0, coef) / (gen.temperature + gen.offset.abs())
        return torch.softmax(logits.masked_fill(kept == 0, float("-inf")), dim=1)


class Stripes(ssnfx.core.methods.Method):
    """Every slot cut into ``stripes`` bands of rows (a setting of its own, 2 by default), each
    band a SuperWeight shared by the same band of every slot of its shape."""

    name = "stripes"
    default_combiner = "avg"
    options = {"stripes": 2}

    def layout(self, slots: Sequence[Slot], config: ssnfx.ShareConfig
               ) -> tuple[list[tuple[int, int]], dict[str, list[Tile]]]:
        n = self.own(config)["stripes"]
        sws: list[tuple[int, int]] = []
        index: dict[tuple[int, int], int] = {}
        layout: dict[str, list[Tile]] = {}
        for s in slots:
            rows, cols = s.matrix
            cuts = [rows * k // n for k in range(n + 1)]
            tiles = []
            for top, bottom in zip(cuts, cuts[1:]):
                if bottom > top:
                    key = (bottom - top, cols)
                    index.setdefault(key, len(sws))
                    if index[key] == len(sws):
                        sws.append(key)
                    tiles.append(Tile(index[key], top, 0, len(tiles) + n * len(layout)))
            layout[s.name] = tiles
        return sws, layout


def _write(model: nn.Module, inputs: tuple, path: str) -> None:
    torch.save(model.state_dict(), path)


def test_a_combiner_and_an_export_format_defined_here(tmp_path):
    ssnfx.core.combiners.register_combiner(Tempered())
    fmt = register_export_format(ExportFormat("weights", ".sd", _write, None))
    try:
        model = SmallCNN()
        shared = ssnfx.share(model, 0.3, ssnfx.ShareConfig(combiner="tempered",
                                                           options={"temperature": 0.25}))
        # The plan counts the coefficients with the combiner that creates them, and records
        # the combiner's own setting, which the generator reads.
        plan = shared.ssnfx.plan
        method = ssnfx.core.methods.get_method(plan.method).options  # SWN's, say
        assert plan.options.components.keys() == {"temperature", *method}
        assert plan.options.components["temperature"] == 0.25
        assert shared.ssnfx.g0.temperature == 0.25
        default = ssnfx.share(SmallCNN(), 0.3, ssnfx.ShareConfig(combiner="tempered"))
        assert default.ssnfx.g0.temperature == 0.5
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
        assert again.ssnfx.g0.temperature == 0.25  # its setting travels in the plan
        torch.testing.assert_close(again(x), shared(x))
    finally:
        ssnfx.core.combiners.COMBINER_REGISTRY.pop("tempered")
        EXPORT_FORMATS.pop(fmt.name)


class Bags(nn.Module):
    """A bag-of-tokens classifier: EmbeddingBag is a torch.nn module, so the trace keeps it a
    leaf unless a layer kind inlines it."""

    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(200, 16, mode="mean")
        self.head = nn.Linear(16, 4)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.bag(tokens))


class InlinedEmbeddingBag(ssnfx.core.layer_kinds.LayerKind):
    """EmbeddingBag traced through (F.embedding_bag reads the weight as a graph node), its table
    at N(0, 1) as PyTorch initialises it."""

    name = "EmbeddingBag"
    classes = inlined = (nn.EmbeddingBag,)

    def default_std(self, slot: ssnfx.core.plan.Slot) -> float:
        return 1.0


def test_a_layer_kind_traced_through_defined_here():
    def reads(gm: torch.fx.GraphModule) -> tuple[set, set]:
        ops = {(n.op, n.target) for n in gm.graph.nodes}
        return ({t for op, t in ops if op == "get_attr"}, {t for op, t in ops
                                                            if op == "call_module"})
    attrs, calls = reads(ssnfx.trace(Bags()))
    assert "bag" in calls and "bag.weight" not in attrs  # a leaf: a functional call
    ssnfx.core.layer_kinds.register_layer_kind(InlinedEmbeddingBag())
    try:
        torch.manual_seed(0)
        model = Bags()
        gm = ssnfx.trace(model)
        attrs, calls = reads(gm)
        assert "bag.weight" in attrs and "bag" not in calls  # traced through
        tokens = torch.randint(0, 200, (8, 5))
        torch.testing.assert_close(gm(tokens), model(tokens))
        shared = ssnfx.share(model, 0.2)
        plan = shared.ssnfx.plan
        assert {s.name: s.kind for s in plan.slots if s.shared} == {
            "bag.weight": "EmbeddingBag", "head.weight": "Linear"}
        assert count_params(shared) == plan.shared_params <= plan.budget
        # The table is generated at its kind's scale, not Linear's 1/sqrt(3 fan_in).
        std = ssnfx.fold(shared).bag.weight.std().item()
        assert 0.5 < std < 2.0, std
        folded = ssnfx.fold(shared.eval())
        torch.testing.assert_close(folded(tokens), shared(tokens), rtol=1e-5, atol=1e-5)
    finally:
        ssnfx.core.layer_kinds.LAYER_KINDS.pop("EmbeddingBag")


def test_a_method_with_a_setting_of_its_own_defined_here(tmp_path):
    ssnfx.core.methods.register_method(Stripes())
    try:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 9), nn.ReLU(),
                            nn.Linear(9, 3))
        x = torch.randn(4, 12)
        for stripes in (2, 3):
            options = {} if stripes == 2 else {"stripes": stripes}  # 2: its default
            config = ssnfx.ShareConfig(method="stripes", options=options)
            shared, folded = check_pipeline(net, (x,), 0.5, config, backward=True)
            plan = shared.ssnfx.plan
            assert plan.method == "stripes" and plan.options.components == {"stripes": stripes}
            assert all(len(g.layout[n]) == stripes for g in plan.groups for n in g.slots)
            assert count_params(shared) == plan.shared_params <= plan.budget
        ssnfx.save(shared, tmp_path / "s.pt")
        again = ssnfx.load(nn.Sequential(nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 9),
                                         nn.ReLU(), nn.Linear(9, 3)), tmp_path / "s.pt")
        assert again.ssnfx.plan.options.components == {"stripes": 3}
        torch.testing.assert_close(again(x), shared(x))
        with pytest.raises(ssnfx.PlanError, match="Stripes's option 'stripes' must be of the "
                                                  "type of its default 2, got 'many'"):
            ssnfx.share(net, 0.5, ssnfx.ShareConfig(method="stripes",
                                                    options={"stripes": "many"}))
    finally:
        ssnfx.core.methods.METHOD_REGISTRY.pop("stripes")

