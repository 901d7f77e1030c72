"""The sharing picture: layers in graph order coloured by group, beside the layer-similarity
matrix (as the papers' sharing maps). matplotlib is an optional extra: ``ssnfx[plots]``.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from ._io import atomic_path
from .errors import SsnfxError
from .lsm import layer_similarity
from .plan import SharingPlan

__all__ = ["plot_sharing", "coefficient_similarity"]


def coefficient_similarity(shared: torch.nn.Module) -> tuple[list[str], torch.Tensor] | None:
    """The poster's layer similarity matrix as ``(names, matrix)`` for :func:`plot_sharing`, or
    None (see :func:`ssnfx.lsm.layer_similarity`, which computes it)."""
    lsm = layer_similarity(shared)
    return None if lsm is None else (lsm.names, lsm.matrix)


#: Up to this many layers are named on the axes; beyond, they are numbered in graph order.
_NAMED = 40


def plot_sharing(plan: SharingPlan, path: str | os.PathLike[str],
                 similarity: tuple[list[str], torch.Tensor] | None = None,
                 similarity_title: str = "layer similarity") -> None:
    """Write a PNG of the plan: slot sizes in graph order coloured by group, and the similarity
    matrix when one is known (measured by search, or from coefficients), titled
    ``similarity_title``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise SsnfxError("the sharing picture needs matplotlib: pip install 'ssnfx[plots]'") from e
    group_of = {n: i for i, g in enumerate(plan.groups) for n in g.slots}
    slots = sorted((s for s in plan.slots if s.shared), key=lambda s: s.position)
    cmap = plt.get_cmap("tab20")
    fig, axes = plt.subplots(1, 2 if similarity else 1, figsize=(13 if similarity else 8, 5),
                             squeeze=False)
    ax = axes[0][0]
    ax.bar(range(len(slots)), [s.numel for s in slots],
           color=[cmap(group_of[s.name] % 20) for s in slots])
    ax.set_yscale("log")
    ax.set_xlabel("shared layer (graph order)")
    _name_ticks(ax.set_xticks, ax.set_xticklabels, [s.name for s in slots])
    ax.set_ylabel("weights generated")
    ax.set_title(f"{plan.method.upper()} / {plan.combiner}: {len(plan.groups)} group(s), "
                 f"{plan.shared_params:,} of {plan.trainable_params:,} trainable parameters "
                 f"({plan.shared_params / plan.trainable_params:.1%})", fontsize=9)
    for i, g in enumerate(plan.groups[:20]):
        ax.bar([], [], color=cmap(i % 20), label=f"{g.name}: {len(g.slots)} layers, "
                                                 f"{g.numel:,} params")
    ax.legend(fontsize=7, loc="upper right")
    if similarity:
        names, matrix = similarity
        low = -1 if float(torch.nan_to_num(matrix).min()) < 0 else 0
        im = axes[0][1].imshow(matrix.numpy(), cmap="viridis", vmin=low, vmax=1)
        axes[0][1].set_title(f"{similarity_title} ({len(names)} layers, graph order)",
                             fontsize=9)
        _name_ticks(axes[0][1].set_xticks, axes[0][1].set_xticklabels, names)
        _name_ticks(axes[0][1].set_yticks, axes[0][1].set_yticklabels, names, rotation=0)
        fig.colorbar(im, ax=axes[0][1], fraction=0.046)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _name_ticks(set_ticks: Any, set_labels: Any, names: list[str], rotation: int = 90) -> None:
    """One tick per layer, labelled with its name (without ``.weight``) when they are few."""
    if len(names) <= _NAMED:
        set_ticks(range(len(names)))
        set_labels([n.removesuffix(".weight") for n in names], fontsize=6, rotation=rotation)
