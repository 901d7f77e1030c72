"""The sharing picture (ssnfx/plot.py): a test cannot judge a picture, but it can check that
every layer is named as a reader can map it, that every colour and band is in the legend, and
that the figure grows with the model so that rows stay readable (docs/guides/report.md shows
the pictures themselves)."""
from __future__ import annotations

import matplotlib
import pytest
import torch
import torch.nn as nn
import torchvision

import ssnfx
from ssnfx.plot import FONT, ROW_INCHES, plot_sharing, sharing_figure
from ssnfx.sharing_map import split_name

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.attn = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(),
                                 nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.proj(self.attn(x).relu())
        return x + self.mlp(x)


class Deep(nn.Module):
    """``blocks.0.attn`` ... ``blocks.{n-1}.mlp.2``: 4 shared layers per block."""

    def __init__(self, blocks: int, width: int = 8) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[Block(width) for _ in range(blocks)])
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


def _axes(fig, label: str):
    return next(ax for ax in fig.axes if ax.get_label() == label)


def _legend(fig) -> list[str]:
    return [t.get_text() for t in _axes(fig, "legend").get_legend().get_texts()]


def test_every_layer_is_named_by_block_and_every_colour_is_explained():
    model = torchvision.models.mobilenet_v3_small()
    shared = ssnfx.share(model, 0.1, ssnfx.ShareConfig(strategy="depth", groups=3))
    plan = shared.ssnfx.plan
    fig = sharing_figure(shared)
    try:
        rows = sorted((s for s in plan.slots if s.shared), key=lambda s: s.position)
        assert len(rows) == 54
        labels = [t.get_text() for t in _axes(fig, "layers").get_yticklabels()]
        assert labels == [split_name(s.name, s.role)[1] for s in rows]  # short names, in order
        assert labels[:3] == ["0", "block.0.0", "block.1.fc1"]
        blocks = {t.get_text() for t in _axes(fig, "blocks").texts}
        assert {"features.0", "features.1", "features.11", "classifier"} <= blocks
        # Every layer maps back: its block and its short name make its qualified name.
        for s, label in zip(rows, labels):
            block = split_name(s.name, s.role)[0]
            assert s.name.removesuffix(".weight") == f"{block}.{label}".lstrip(".")
        legend = " | ".join(_legend(fig))
        for g in plan.groups:
            n = len(g.slots)
            assert f"group {g.name}: {n} layer{'s' * (n != 1)}, store {g.numel:,}" in legend
        for key in ("private", "hatched", "the budget", "bands", "store map", "grey cell"):
            assert key in legend
        assert _axes(fig, "similarity").get_title(loc="left") == "|cos| of the layers' coefficients"
    finally:
        plt.close(fig)


def test_the_figure_grows_with_the_model_and_rows_stay_readable():
    heights, per_row = {}, {}
    for blocks in (12, 50):  # 49 and 201 shared layers
        fig = sharing_figure(ssnfx.share(Deep(blocks), 0.5))
        try:
            fig.canvas.draw()  # (the constrained layout places the axes when drawing)
            layers = _axes(fig, "layers")
            n = len(layers.get_yticklabels())
            assert n == 4 * blocks + 1
            heights[n] = fig.get_size_inches()[1]
            per_row[n] = layers.get_position().height * heights[n] / n
            assert min(t.get_fontsize() for t in layers.get_yticklabels()) >= FONT
            # The similarity columns are named by block, as many as fit side by side.
            sim = _axes(fig, "similarity")
            ticks = sim.get_xticks()
            width = sim.get_position().width * fig.get_size_inches()[0]
            assert len(ticks) >= 2
            assert min(b - a for a, b in zip(ticks, ticks[1:])) * width / n \
                >= FONT / 72 * 1.3
        finally:
            plt.close(fig)
    assert heights[201] - heights[49] == pytest.approx(152 * ROW_INCHES, rel=0.01)
    assert min(per_row.values()) >= 0.8 * ROW_INCHES  # a row is as tall at 200 as at 50


def test_a_plan_alone_and_many_groups(tmp_path):
    shared = ssnfx.share(Deep(8), 0.5, ssnfx.ShareConfig(strategy="random", groups=24))
    plan = shared.ssnfx.plan
    fig = sharing_figure(plan)  # a bare plan: no coefficients, no similarity
    try:
        assert "similarity" not in [ax.get_label() for ax in fig.axes]
        assert len(plan.groups) == 24
        assert any("4 more groups (their colours repeat)" in t for t in _legend(fig))
    finally:
        plt.close(fig)
    plot_sharing(shared, tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*"))  # written whole, no temporary left
