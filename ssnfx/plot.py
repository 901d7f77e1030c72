"""The sharing picture: where the budget goes, and which layers share what.

One figure that grows a row per shared layer, so that it reads the same at 4 layers and at 200:

* at the top, the budget as one bar: the private parameters, then each group's store and its
  coefficients, against the budget line;
* a legend for every colour, hatch, band and grey cell;
* one row per shared layer in graph order, named by its short name within its block (the
  block's name on the left, its rows in a shaded or white band): the weights the layer generates
  (log scale, coloured by group), the part of its group's store those weights are drawn from
  (where two rows overlap, the layers share those parameters), and the layer-similarity matrix
  when one is known (measured by the search, or the layers' coefficients).

matplotlib is an optional extra: ``pip install 'ssnfx[plots]'``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ssnfx.core._io import atomic_path
from ssnfx.core.errors import PlanError, SsnfxError
from ssnfx.core.markers import store_of
from ssnfx.core.plan import SharingPlan
from ssnfx.lsm import layer_similarity
from ssnfx.sharing_map import Block, StoreRead, blocks, split_name, store_reads

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_sharing", "sharing_figure", "coefficient_similarity"]

#: Inches per layer row, and the font size of the row names: the figure grows with the model.
ROW_INCHES = 0.14
FONT = 6.5
#: Colours of the parts that are not groups: private parameters, alternate block bands, cells
#: of the similarity matrix without a value.
PRIVATE = "#9e9e9e"
BAND = "#ececec"
NO_VALUE = "#c8c8c8"
#: Groups given a legend entry of their own (beyond, the colours repeat and the legend says so).
_LISTED = 20
#: Up to this many blocks, white lines mark their boundaries in the similarity matrix.
_BOUNDARIES = 40


def coefficient_similarity(shared: torch.nn.Module) -> tuple[list[str], torch.Tensor] | None:
    """The poster's layer similarity matrix as ``(names, matrix)`` for :func:`plot_sharing`, or
    None (see :func:`ssnfx.lsm.layer_similarity`, which computes it)."""
    lsm = layer_similarity(shared)
    return None if lsm is None else (lsm.names, lsm.matrix)


@dataclass(frozen=True)
class _Row:
    """One shared layer: its names, group and what its weight is drawn from."""

    name: str
    block: str
    layer: str
    group: int
    numel: int
    read: StoreRead


def _similarity_of(shared_or_plan: torch.nn.Module | SharingPlan, plan: SharingPlan
                   ) -> tuple[tuple[list[str], torch.Tensor] | None, str]:
    """What the search measured, else the layers' coefficient similarity (a shared model)."""
    if "gradient_similarity" in plan.measured:
        return ((plan.measured["slots"], torch.tensor(plan.measured["gradient_similarity"])),
                "gradient similarity measured by the search")
    if isinstance(shared_or_plan, torch.nn.Module) \
            and not any(p.is_meta for p in store_of(shared_or_plan).parameters()):
        return coefficient_similarity(shared_or_plan), "|cos| of the layers' coefficients"
    return None, ""


def sharing_figure(shared_or_plan: torch.nn.Module | SharingPlan,
                   similarity: tuple[list[str], torch.Tensor] | None = None,
                   similarity_title: str = "layer similarity") -> Figure:
    """The sharing picture as a matplotlib Figure (close it with ``plt.close(fig)``); its axes
    are labelled ``budget``, ``legend``, ``blocks``, ``layers``, ``store map`` and
    ``similarity`` (``ax.get_label()``).

    ``similarity`` is ``(names, matrix)`` over shared layers; without it, the gradient
    similarity the search measured (in the plan), else for a shared model the layers'
    coefficient similarity (:func:`coefficient_similarity`), else none.

    Example:
        >>> import torch, ssnfx
        >>> from ssnfx.plot import sharing_figure
        >>> net = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(),
        ...                           torch.nn.Linear(16, 4))
        >>> fig = sharing_figure(ssnfx.share(net, 0.5))
        >>> layers = next(ax for ax in fig.axes if ax.get_label() == "layers")
        >>> [t.get_text() for t in layers.get_yticklabels()]  # one row per shared layer
        ['0', '2']
    """
    plt = _pyplot()
    store = None if isinstance(shared_or_plan, SharingPlan) else store_of(shared_or_plan)
    plan = shared_or_plan if isinstance(shared_or_plan, SharingPlan) \
        else getattr(store, "plan", None)
    if plan is None:
        raise PlanError("the sharing picture expects a SharingPlan or a shared model")
    if similarity is None:
        similarity, similarity_title = _similarity_of(shared_or_plan, plan)
    rows = _rows(plan)
    runs = blocks([r.block for r in rows])
    colours = _colours(len(plan.groups))
    n = max(len(rows), 1)
    rows_h = max(n * ROW_INCHES, 1.4)
    # Widths from the longest names (about 0.55 em per character), so that names never clip.
    block_w = max(0.3, _text_inches(max((b.name for b in runs), key=len, default=""), True))
    label_w = _text_inches(max((r.layer for r in rows), key=len, default=""))
    sim_w = min(max(rows_h, 2.6), 6.5) if similarity is not None else 0.0
    widths = [block_w, 2.4, 3.4] + ([sim_w] if similarity is not None else [])
    width = max(sum(widths) + label_w + 1.4, 10.0)
    legend = _legend_entries(plan, rows, colours, similarity is not None)
    legend_cols = 2 if len(legend) > 4 and width >= 13 else 1
    legend_h = 0.2 + 0.16 * math.ceil(len(legend) / legend_cols)
    header_h = 1.0
    fig = plt.figure(figsize=(width, header_h + legend_h + rows_h + 1.1), layout="constrained")
    grid = fig.add_gridspec(3, len(widths), width_ratios=widths,
                            height_ratios=[header_h, legend_h, rows_h])
    _budget_bar(fig.add_subplot(grid[0, :], label="budget"), plan, colours)
    key = fig.add_subplot(grid[1, :], label="legend")
    key.axis("off")
    key.legend(handles=legend, loc="center", ncol=legend_cols, fontsize=FONT + 0.5,
               frameon=False, handlelength=2.4)
    names_ax = fig.add_subplot(grid[2, 0], label="blocks")
    bars = fig.add_subplot(grid[2, 1], sharey=names_ax, label="layers")
    reads = fig.add_subplot(grid[2, 2], sharey=names_ax, label="store map")
    _block_names(names_ax, runs, n)
    _layer_bars(bars, rows, colours)
    _store_map(reads, plan, rows, colours)
    for ax in (bars, reads):
        _bands(ax, runs)
    if similarity is not None:
        _similarity(fig, fig.add_subplot(grid[2, 3], sharey=names_ax, label="similarity"),
                    rows, runs, similarity, similarity_title)
    names_ax.set_ylim(n - 0.5, -0.5)  # the first layer at the top
    fig.suptitle(_title(plan, rows), fontsize=FONT + 3)
    return fig


def plot_sharing(shared_or_plan: torch.nn.Module | SharingPlan, path: str | os.PathLike[str],
                 similarity: tuple[list[str], torch.Tensor] | None = None,
                 similarity_title: str = "layer similarity") -> None:
    """Write the sharing picture (:func:`sharing_figure`) to ``path`` as a PNG; ``ssnfx report
    DIR --png FILE`` draws it from the command line.

    Example:
        >>> import tempfile, torch, ssnfx
        >>> from pathlib import Path
        >>> from ssnfx.plot import plot_sharing
        >>> shared = ssnfx.share(torch.nn.Sequential(torch.nn.Linear(32, 32)), 0.5)
        >>> path = Path(tempfile.mkdtemp()) / "sharing.png"
        >>> plot_sharing(shared, path)
        >>> path.read_bytes()[:4]
        b'\x89PNG'
    """
    fig = sharing_figure(shared_or_plan, similarity, similarity_title)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        _pyplot().close(fig)


# ---- parts of the figure ---------------------------------------------------------------------

def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise SsnfxError("the sharing picture needs matplotlib: pip install 'ssnfx[plots]'") from e
    return plt


def _rows(plan: SharingPlan) -> list[_Row]:
    slots = {s.name: s for s in plan.slots}
    rows = []
    for i, g in enumerate(plan.groups):
        for name, read in store_reads(plan, g).items():
            block, layer = split_name(name, slots[name].role)
            rows.append(_Row(name, block, layer or name, i, slots[name].numel, read))
    return sorted(rows, key=lambda r: slots[r.name].position)


def _colours(groups: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if groups <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(groups)]


def _text_inches(text: str, bold: bool = False) -> float:
    return (0.62 if bold else 0.55) * FONT * len(text) / 72


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:,.0f}"


def _title(plan: SharingPlan, rows: list[_Row]) -> str:
    return (f"ssnfx sharing: {plan.method.upper()} / {plan.combiner}, "
            f"{plan.options.strategy} strategy, {len(plan.groups)} group(s), "
            f"{len(rows)} shared layers\n{plan.shared_params:,} trainable parameters for a "
            f"budget of {plan.budget:,}: {plan.shared_params / plan.trainable_params:.2%} of the "
            f"original's {plan.trainable_params:,} (fold gives the original's parameters back)")


def _budget_bar(ax: Any, plan: SharingPlan, colours: list[Any]) -> None:
    """Private, then each group's store and (hatched) coefficients, against the budget."""
    from matplotlib.ticker import FuncFormatter

    parts = [("private", plan.private_params, PRIVATE, "")]
    for g, colour in zip(plan.groups, colours):
        parts += [(f"{g.name} store", g.numel, colour, ""),
                  (f"{g.name} coef.", plan.coefficient_params(g), colour, "////")]
    total, left = max(plan.shared_params, plan.budget), 0
    for label, size, colour, hatch in parts:
        ax.barh(0, size, left=left, color=colour, hatch=hatch, edgecolor="white", linewidth=0.5)
        if size / total > 0.07:  # a label where it fits; the legend has every part
            ax.text(left + size / 2, 0, f"{label}\n{_human(size)}", ha="center", va="center",
                    fontsize=FONT, color="black" if colour == PRIVATE else "white")
        left += size
    ax.axvline(plan.budget, color="black", linestyle="--", linewidth=1)
    ax.set_xlim(0, total * 1.01)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _human(x)))
    ax.set_yticks([])
    ax.tick_params(labelsize=FONT)
    ax.set_title("where the budget goes: private parameters, then each group's store and "
                 "coefficients (dashed: the budget)", fontsize=FONT + 1.5, loc="left")


def _legend_entries(plan: SharingPlan, rows: list[_Row], colours: list[Any],
                    with_similarity: bool) -> list[Any]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    layers = [sum(r.group == i for r in rows) for i in range(len(plan.groups))]
    entries: list[Any] = [
        Patch(color=colour, label=f"group {g.name}: {n} layer{'s' * (n != 1)}, store {g.numel:,}, "
                                  f"coefficients {plan.coefficient_params(g):,}")
        for g, colour, n in list(zip(plan.groups, colours, layers))[:_LISTED]]
    if len(plan.groups) > _LISTED:
        entries.append(Patch(color="white", label=f"... {len(plan.groups) - _LISTED} more "
                                                  f"groups (their colours repeat)"))
    entries += [
        Patch(color=PRIVATE, label=f"private (norms, biases, unshared): "
                                   f"{plan.private_params:,}"),
        Patch(facecolor="white", edgecolor="black", hatch="////",
              label="hatched: coefficients (budget bar); a weight upsampled from a smaller "
                    "store block (layer bars)"),
        Line2D([], [], color="black", linestyle="--", label=f"the budget: {plan.budget:,}"),
        Patch(facecolor=BAND, edgecolor="#bbbbbb",
              label="shaded and white bands: the layers of one block (named on the left)"),
        Patch(color=colours[0] if colours else PRIVATE, alpha=0.8,
              label="store map: the store parameters each layer is drawn from; "
                    "overlapping rows share them")]
    if with_similarity:
        entries.append(Patch(facecolor=NO_VALUE, edgecolor="#999999",
                             label="grey cell: no value (coefficients of different sizes, or "
                                   "a layer drawn from a single block: nothing to compare)"))
    return entries


def _bands(ax: Any, runs: list[Block]) -> None:
    for k, run in enumerate(runs):
        if k % 2:
            ax.axhspan(run.start - 0.5, run.stop - 0.5, color=BAND, zorder=0, linewidth=0)


def _block_names(ax: Any, runs: list[Block], n: int) -> None:
    """The left column: each block's name beside its rows."""
    _bands(ax, runs)
    for run in runs:
        ax.text(1.0, (run.start + run.stop - 1) / 2, run.name, ha="right", va="center",
                fontsize=FONT, fontweight="bold", transform=ax.get_yaxis_transform())
    ax.set_xlim(0, 1)
    ax.set_xticks([])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(left=False, labelleft=False)
    if any(run.name for run in runs):
        ax.set_title("block", fontsize=FONT + 1.5)


def _layer_bars(ax: Any, rows: list[_Row], colours: list[Any]) -> None:
    """Weights each layer generates, log scale, coloured by group, hatched where upsampled."""
    from matplotlib.ticker import NullFormatter

    for i, r in enumerate(rows):
        ax.barh(i, r.numel, color=colours[r.group], height=0.8, zorder=2,
                hatch="////" if r.read.upsampled else "", edgecolor="white", linewidth=0)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # (minor labels crowd a short axis)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r.layer for r in rows], fontsize=FONT)
    ax.tick_params(axis="y", length=0)
    ax.tick_params(axis="x", labelsize=FONT)
    ax.set_xlabel("weights the layer generates (log)", fontsize=FONT + 1)
    ax.set_title("layer (graph order)", fontsize=FONT + 1.5, loc="left")


def _store_map(ax: Any, plan: SharingPlan, rows: list[_Row], colours: list[Any]) -> None:
    """Each layer's row marks the store parameters it is drawn from. Groups side by side, each
    scaled to the same width (the budget bar shows their sizes), so that the layers of a small
    group stay visible next to a large one."""
    gap = 0.04
    for i, r in enumerate(rows):
        g = plan.groups[r.group]
        start = r.group * (1 + gap)
        ax.broken_barh([(start + a / g.numel, (b - a) / g.numel) for a, b in r.read.ranges],
                       (i - 0.4, 0.8), facecolors=colours[r.group], alpha=0.8, zorder=2,
                       linewidth=0)
    for k in range(len(plan.groups)):
        ax.axvspan(k * (1 + gap), k * (1 + gap) + 1, color="#f7f7f7", zorder=1, linewidth=0)
    ax.set_xlim(-gap / 2, len(plan.groups) * (1 + gap) - gap / 2)
    ax.set_xticks([k * (1 + gap) + 0.5 for k in range(len(plan.groups))][:_LISTED])
    ax.set_xticklabels([f"{g.name}\n{_human(g.numel)}" for g in plan.groups][:_LISTED],
                       fontsize=FONT)
    ax.tick_params(axis="y", left=False, labelleft=False)
    ax.set_xlabel("each group's store, start to end (same width whatever its size)",
                  fontsize=FONT + 1)
    ax.set_title("store map: what each layer is drawn from", fontsize=FONT + 1.5, loc="left")


def _similarity(fig: Any, ax: Any, rows: list[_Row], runs: list[Block],
                similarity: tuple[list[str], torch.Tensor], title: str) -> None:
    """The similarity matrix in the rows' order (grey where it has no value), block lines."""
    import matplotlib

    names, matrix = similarity
    index = {r.name: i for i, r in enumerate(rows)}
    n = len(rows)
    full = torch.full((n, n), float("nan"))
    where = [(k, index[name]) for k, name in enumerate(names) if name in index]
    if where:
        src = torch.tensor([k for k, _ in where])
        dst = torch.tensor([i for _, i in where])
        full[dst[:, None], dst[None, :]] = matrix.float()[src[:, None], src[None, :]]
    low = -1.0 if float(torch.nan_to_num(full).min()) < 0 else 0.0
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=NO_VALUE)
    image = ax.imshow(full.numpy(), cmap=cmap, vmin=low, vmax=1, aspect="auto",
                      interpolation="nearest", extent=(-0.5, n - 0.5, n - 0.5, -0.5))
    if len(runs) <= _BOUNDARIES:  # block boundaries, across and down (many would hide cells)
        for run in runs[1:]:
            ax.axhline(run.start - 0.5, color="white", linewidth=0.4)
            ax.axvline(run.start - 0.5, color="white", linewidth=0.4)
    # Columns are the rows' layers, left to right: named by block where there are blocks, as
    # many names as fit side by side (1.4 font heights apart).
    width = ax.get_position().width * fig.get_size_inches()[0]
    gap = 1.4 * FONT / 72 / (width / n)
    named = [run for run in runs if run.name]
    ticks = [((run.start + run.stop - 1) / 2, run.name) for run in named] if len(named) > 1 \
        else [(i, r.layer) for i, r in enumerate(rows)]
    shown: list[tuple[float, str]] = []
    for at, label in ticks:
        if not shown or at - shown[-1][0] >= gap:
            shown.append((at, label))
    ax.set_xticks([at for at, _ in shown])
    ax.set_xticklabels([label for _, label in shown], rotation=90, fontsize=FONT)
    ax.tick_params(axis="y", left=False, labelleft=False)
    every = "" if len(shown) == len(ticks) else f" ({len(shown)} of {len(ticks)} named)"
    ax.set_xlabel(f"the same layers, left to right{every}", fontsize=FONT + 1)
    ax.set_title(title, fontsize=FONT + 1.5, loc="left")
    bar = fig.colorbar(image, ax=ax, location="top", shrink=0.5, aspect=30, pad=0.01)
    bar.ax.tick_params(labelsize=FONT)
