"""ssnfx.core.methods: the method registry; a method defined and registered here is used
throughout."""
from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
import torch.nn as nn

import ssnfx
from ssnfx.core.methods import METHOD_REGISTRY, Method, get_method, register_method
from ssnfx.core.plan import Slot, Tile

from helpers import check_pipeline


class Halves(Method):
    """Every slot is two SuperWeights, its top and bottom halves (rows), each shared by the
    same half of every slot of its shape: a method the registry has not seen."""

    name = "halves"
    default_combiner = "avg"

    def layout(self, slots: Sequence[Slot], config: ssnfx.ShareConfig
               ) -> tuple[list[tuple[int, int]], dict[str, list[Tile]]]:
        sws: list[tuple[int, int]] = []
        index: dict[tuple[int, int], int] = {}
        layout: dict[str, list[Tile]] = {}
        for s in slots:
            rows, cols = s.matrix
            top = rows // 2
            tiles = []
            for start, height in ((0, top), (top, rows - top)):
                key = (height, cols)
                if key not in index:
                    index[key] = len(sws)
                    sws.append(key)
                tiles.append(Tile(index[key], start, 0, len(tiles) + 2 * len(layout)))
            layout[s.name] = tiles
        return sws, layout


@pytest.fixture
def halves():
    register_method(Halves())
    yield
    del METHOD_REGISTRY["halves"]


def test_builtin_methods_own_their_defaults():
    assert get_method("ssn").default_combiner == ssnfx.ShareConfig().resolved_combiner == "linear"
    assert get_method("swn").shares_by == "clusters"
    with pytest.raises(ValueError, match="unknown method 'nope'.*register_method"):
        get_method("nope")
    with pytest.raises(ssnfx.PlanError, match="method must be one of"):
        ssnfx.ShareConfig(method="nope")


def test_a_registered_method_plans_shares_and_folds(halves):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                        nn.Linear(8, 3))
    config = ssnfx.ShareConfig(method="halves")
    assert config.resolved_combiner == "avg"
    shared, folded = check_pipeline(net, (torch.randn(4, 12),), 0.5, config, backward=True)
    plan = shared.ssnfx.plan
    assert plan.method == "halves" and plan.combiner == "avg"
    assert all(len(g.layout[n]) == 2 for g in plan.groups for n in g.slots)
    assert sum(p.numel() for p in shared.parameters()) <= plan.budget
    # The plan round-trips while the method is registered (check_pipeline folded it).
    assert ssnfx.SharingPlan.from_json(plan.to_json()).method == "halves"


def test_auto_tile_refuses_a_tile_whose_tiles_alone_outgrow_the_share(monkeypatch):
    # resnet18's stem (64, 3 * 7 * 7) leaves t = 1 as the only power of two dividing every side:
    # 11M one-element tiles, whose coefficient rows alone are over the share. It is refused
    # without laying them out (that layout took 30 s per share of resnet18, 200 s of vit_b_16).
    import ssnfx.core.methods as methods
    slots = [Slot("stem", (64, 3, 7, 7), "weight", "Conv2d", 0)] + [
        Slot(f"c{i}", (512, 512, 3, 3), "weight", "Conv2d", i + 1) for i in range(4)]
    laid_out = []
    monkeypatch.setattr(methods, "swn_layout",
                        lambda *a, **kw: laid_out.append(a) or pytest.fail("laid out"))
    config = ssnfx.ShareConfig(method="swn")
    assert methods.auto_tile(slots, 1_000_000, config) == 0 and not laid_out
    # A tile that divides every side is still laid out and taken where its rows fit.
    monkeypatch.undo()
    square = [Slot(f"l{i}", (128, 128), "weight", "Linear", i) for i in range(8)]
    assert methods.auto_tile(square, 40_000, config) == 32


def test_the_method_says_whether_it_reserves_rows_for_refine():
    # SWN's hard sharing keeps a coefficient row per tile for refine to untie, and the plan
    # records when to refine; SSN has no hard sharing to undo (nor the setting).
    gm = ssnfx.trace(nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 8)))
    for name, reserves in (("swn", True), ("ssn", False)):
        config = ssnfx.ShareConfig(method=name, options={"hard_sharing": True} if reserves else {})
        plan = ssnfx.make_plan(gm, 0.5, config)
        assert get_method(name).reserves_rows(config) is reserves
        tiles = sum(len(t) for t in plan.groups[0].layout.values())
        assert plan.groups[0].reserved == (tiles if reserves else 0)
        assert plan.options.refine_at == (0.05 if reserves else None)
    assert not get_method("swn").reserves_rows(ssnfx.ShareConfig(method="swn"))
