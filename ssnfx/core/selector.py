"""The parameter selector and SuperWeight layouts: pure functions from shapes to plan structure.

* :func:`ssn_layout`: one SuperWeight per slot, the slot itself (SSN Sec. 3.1).
* :func:`swn_layout`: SuperWeights sized from the group's sorted layer shapes and concatenated
  along input and output channels to form each slot (SWN Sec. 2.1.2), generalised to shapes that
  do not nest: the group's canvas is cut at every slot's row and column count, and a slot covers
  the tiles of its top-left corner.
* :func:`select_blocks`: up to P consecutive candidate blocks per SuperWeight from a flat store,
  each SuperWeight starting where the previous one's stopped (SSN Sec. 3.1's round robin across
  layers). Blocks are whole, so parameters beyond a store's last whole block of a size are never
  selected for that size. The RR combiner selects one block per SuperWeight (P = 1), so that
  layer i reads candidate i mod |C|.
* :func:`upsample_source`: the largest block with a SuperWeight's aspect ratio that fits a store
  too small for it; it is bilinearly upsampled (SSN Sec. 3.1).
* :func:`resize_source`: the block of a SuperWeight's aspect ratio that one of P equal
  candidates is viewed as before it is bilinearly resized, up or down, to the SuperWeight
  (SSN Sec. 3.2, a group's ``selection="resized"``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from ssnfx.core.slots import Slot, Tile

__all__ = ["ssn_layout", "swn_layout", "select_blocks", "upsample_source", "resize_source"]


def ssn_layout(slots: Sequence[Slot]) -> tuple[list[tuple[int, int]], dict[str, list[Tile]]]:
    """Each slot is one SuperWeight with its own coefficients.

    Example:
        >>> from ssnfx.core.plan import Slot
        >>> sws, layout = ssn_layout([Slot("a", (4, 2, 3, 3), "weight", "Conv2d", 0)])
        >>> sws, layout["a"]
        ([(4, 18)], [Tile(superweight=0, row=0, col=0, coefficients=0)])
    """
    return [s.matrix for s in slots], {s.name: [Tile(i, 0, 0, i)] for i, s in enumerate(slots)}


def swn_layout(slots: Sequence[Slot], hard_sharing: bool = False, tile: int | None = None
               ) -> tuple[list[tuple[int, int]], dict[str, list[Tile]]]:
    """SuperWeights from sorted layer shapes, concatenated into each slot (SWN Sec. 2.1.2).

    With ``hard_sharing`` every use of a SuperWeight shares one coefficient row (the state SWN
    trains in before its refine step); otherwise each tile has its own row (soft sharing).
    ``tile`` also cuts the canvas every ``tile`` rows and columns, so that no SuperWeight is
    longer than ``tile`` on either side: a store too small for the layers' own blocks then
    still holds several distinct Weight Templates.

    Example:
        >>> from ssnfx.core.plan import Slot
        >>> a = Slot("a", (4, 4), "weight", "Linear", 0)
        >>> b = Slot("b", (8, 6), "weight", "Linear", 1)
        >>> sws, layout = swn_layout([a, b], hard_sharing=True)
        >>> sws
        [(4, 4), (4, 2), (4, 4), (4, 2)]
        >>> [(t.superweight, t.row, t.col) for t in layout["b"]]
        [(0, 0, 0), (1, 0, 4), (2, 4, 0), (3, 4, 4)]
        >>> swn_layout([b], tile=4)[0]
        [(4, 4), (4, 2), (4, 4), (4, 2)]
    """
    def cuts(sizes: set[int]) -> list[int]:
        if tile is not None:
            sizes |= set(range(tile, max(sizes), tile))
        return sorted(sizes)

    row_cuts = cuts({s.matrix[0] for s in slots})
    col_cuts = cuts({s.matrix[1] for s in slots})
    row_start = [0] + row_cuts[:-1]
    col_start = [0] + col_cuts[:-1]
    superweights: list[tuple[int, int]] = []
    index: dict[tuple[int, int], int] = {}
    layout: dict[str, list[Tile]] = {}
    n_coef = 0
    # Smallest slots first, so the SuperWeights they introduce get the lowest indices (the paper's
    # construction order); the tiles of every slot are listed row band by row band.
    for s in sorted(slots, key=lambda s: (s.numel, s.position)):
        rows, cols = s.matrix
        tiles = []
        for a, r_end in enumerate(row_cuts):
            if r_end > rows:
                break
            for b, c_end in enumerate(col_cuts):
                if c_end > cols:
                    break
                if (a, b) not in index:
                    index[(a, b)] = len(superweights)
                    superweights.append((r_end - row_start[a], c_end - col_start[b]))
                k = index[(a, b)]
                coef = k if hard_sharing else n_coef
                n_coef += 0 if hard_sharing else 1
                tiles.append(Tile(k, row_start[a], col_start[b], coef))
        layout[s.name] = tiles
    return superweights, {s.name: layout[s.name] for s in slots}


def select_blocks(numel: int, superweights: Sequence[tuple[int, int]], candidates: int
                  ) -> list[tuple[int, int]]:
    """Round-robin candidate blocks for each SuperWeight from a store of ``numel`` parameters.

    The store is viewed, for a SuperWeight of ``m`` parameters, as ``numel // m`` blocks of ``m``;
    a SuperWeight takes ``min(candidates, numel // m)`` consecutive blocks (wrapping around),
    starting at the first whole block at or after where the previous SuperWeight's selection
    ended. Consecutive SuperWeights of one size thus select every block before reusing one. Not
    every parameter need be selected: the last ``numel % m`` are in no block of size ``m``, and a
    change of size skips to the next whole block of the new size (with one group per layer at a
    budget of 1.2x-1.9x, 17-48% of the store is never selected). Returns ``(first_block,
    count)`` per SuperWeight; ``count == 0`` means the store is smaller than the SuperWeight,
    which is then upsampled.

    Example:
        >>> select_blocks(12, [(2, 2), (2, 2), (3, 4)], candidates=2)
        [(0, 2), (2, 2), (0, 1)]
    """
    out = []
    cursor = 0
    for rows, cols in superweights:
        m = rows * cols
        blocks = numel // m
        if blocks == 0:
            out.append((0, 0))
            continue
        count = min(candidates, blocks)
        first = (-(-cursor // m)) % blocks  # the first whole block at or after the cursor
        out.append((first, count))
        cursor = ((first + count) % blocks) * m
    return out


def upsample_source(numel: int, rows: int, cols: int) -> tuple[int, int]:
    """The largest ``(r, c)`` block with the aspect ratio of ``rows x cols`` that fits ``numel``.

    Example:
        >>> upsample_source(100, 40, 10)
        (20, 5)
        >>> upsample_source(80, 10, 256)
        (2, 40)
        >>> upsample_source(2, 32, 3)
        (2, 1)
    """
    scale = math.sqrt(numel / (rows * cols))
    # At least two rows and columns where the store allows: one row upsampled to many makes
    # every row equal, and a classifier whose rows are equal cannot tell its classes apart.
    floor = 2 if numel >= 4 else 1
    # Never more rows than the store has parameters: a tall SuperWeight from a tiny store
    # would otherwise get a source block larger than the store.
    r = min(numel, max(min(floor, rows), min(rows, int(rows * scale))))
    c = max(1, min(cols, numel // r))
    return r, c


def resize_source(numel: int, rows: int, cols: int) -> tuple[int, int]:
    """The ``(r, c)`` block of ``rows x cols``'s aspect ratio, as large as ``numel``
    parameters allow, that a candidate of ``numel`` parameters is viewed as before it is
    bilinearly resized, up or down, to ``rows x cols`` (SSN Sec. 3.2). Unlike
    :func:`upsample_source` it may be larger than the SuperWeight (a candidate larger than a
    layer is resized down, so that every layer reads all of every candidate's breadth).

    Example:
        >>> resize_source(100, 40, 10), resize_source(6400, 40, 10), resize_source(3, 1, 64)
        ((20, 5), (160, 40), (1, 3))
    """
    scale = math.sqrt(numel / (rows * cols))
    r = max(1, min(numel, round(rows * scale)))
    return r, max(1, numel // r)
