"""What the sharing picture shows, as plain data: short layer names grouped by block, and the
part of its group's store that each layer's weight is drawn from (so that overlapping reads are
shared parameters). :mod:`ssnfx.plot` draws it; nothing here needs matplotlib.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ssnfx.core.combiners import get_combiner
from ssnfx.core.plan import GroupPlan, SharingPlan
from ssnfx.core.selector import resize_source, select_blocks, upsample_source

__all__ = ["split_name", "Block", "blocks", "StoreRead", "store_reads"]


def split_name(name: str, role: str = "weight") -> tuple[str, str]:
    """A parameter's qualified name as ``(block, layer)``: the block is the module path up to
    its first index that a named module follows (``layer3.17``, ``features.5.2``,
    ``encoder.layer.2``: a residual or transformer block), the layer the rest, without the role
    (``conv2``, ``block.1.fc1``, ``attn.qkv``). A name without such an index is its parent
    module and its last part.

    Example:
        >>> split_name("layer3.17.downsample.0.weight")
        ('layer3.17', 'downsample.0')
        >>> split_name("features.1.block.1.fc1.weight")
        ('features.1', 'block.1.fc1')
        >>> split_name("features.5.2.block.1.0.weight")
        ('features.5.2', 'block.1.0')
        >>> split_name("classifier.3.weight"), split_name("fc.weight")
        (('classifier', '3'), ('', 'fc'))
        >>> split_name("fc.bias", role="bias")
        ('', 'fc.bias')
    """
    parts = name.split(".")
    # A layer's weight is the layer; another role stays with its layer's name (fc.bias).
    own = 1 if role == "weight" and len(parts) > 1 and parts[-1] == "weight" else 2
    parts = parts[:-1] if own == 1 else parts
    cut = min((i + 1 for i in range(len(parts) - 1)
               if parts[i].isdigit() and not parts[i + 1].isdigit()),
              default=max(len(parts) - own, 0))
    return ".".join(parts[:cut]), ".".join(parts[cut:])


@dataclass(frozen=True)
class Block:
    """A run of consecutive rows (layers in graph order) with one block name."""

    name: str
    start: int
    stop: int


def blocks(names: Sequence[str]) -> list[Block]:
    """The runs of consecutive equal block names (a block met again later is a new run).

    Example:
        >>> blocks(["", "layer1.0", "layer1.0", "layer1.1", ""])
        [Block(name='', start=0, stop=1), Block(name='layer1.0', start=1, stop=3), \
Block(name='layer1.1', start=3, stop=4), Block(name='', start=4, stop=5)]
    """
    runs: list[Block] = []
    for i, name in enumerate(names):
        if runs and runs[-1].name == name:
            runs[-1] = Block(name, runs[-1].start, i + 1)
        else:
            runs.append(Block(name, i, i + 1))
    return runs


@dataclass(frozen=True)
class StoreRead:
    """The store parameters one slot's weight is drawn from.

    Attributes:
        ranges: ``[start, stop)`` ranges of the group's store, merged and sorted.
        upsampled: True when a part of the weight is upsampled from a block smaller than itself
            (the store holds no whole block of its size, SSN Sec. 3.1).
    """

    ranges: tuple[tuple[int, int], ...]
    upsampled: bool


def store_reads(plan: SharingPlan, group: GroupPlan) -> dict[str, StoreRead]:
    """For each slot of ``group``, the store ranges its SuperWeights' candidates read, as the
    generator selects them (:func:`ssnfx.core.selector.select_blocks`, or the P equal candidates of
    a ``"resized"`` group): two slots whose ranges overlap share those parameters.

    Example:
        >>> import torch, ssnfx
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8),
        ...                           torch.nn.Linear(8, 4))
        >>> cfg = ssnfx.ShareConfig(method="ssn")
        >>> plan = ssnfx.share(net, 2.0, cfg).ssnfx.plan  # store: 328, five blocks of 64
        >>> for name, read in store_reads(plan, plan.groups[0]).items():
        ...     print(name, read.ranges)
        0.weight ((0, 256),)
        1.weight ((0, 192), (256, 320))
        2.weight ((192, 320),)
    """
    picks = select_blocks(group.numel, group.superweights, group.candidates)
    one = get_combiner(plan.combiner).candidates == 1  # RR reads one of its blocks
    reads = {}
    for name in group.slots:
        ranges, upsampled = [], False
        for tile in group.layout[name]:
            rows, cols = group.superweights[tile.superweight]
            if group.selection == "resized":  # P equal candidates, each resized to the tile
                p = min(group.candidates, group.numel)
                size = group.numel // p
                r, c = resize_source(size, rows, cols)
                ranges += [(k * size, k * size + r * c) for k in range(1 if one else p)]
                continue
            first, count = picks[tile.superweight]
            if count == 0:  # no whole block fits: the store's start, upsampled
                r, c = upsample_source(group.numel, rows, cols)
                ranges.append((0, r * c))
                upsampled = True
                continue
            m = rows * cols
            for i in range(1 if one else count):
                b = (first + i) % (group.numel // m)
                ranges.append((b * m, (b + 1) * m))
        reads[name] = StoreRead(_merged(ranges), upsampled)
    return reads


def _merged(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for start, stop in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], stop))
        else:
            out.append((start, stop))
    return tuple(out)
