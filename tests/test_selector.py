import pytest

from ssnfx.core.plan import Slot
from ssnfx.core.selector import select_blocks, ssn_layout, swn_layout, upsample_source


def _slot(name, shape, pos=0):
    return Slot(name, shape, "weight", "Linear", pos)


def _covered(numel, sizes, p):
    used = set()
    for (r, c), (first, count) in zip(sizes, select_blocks(numel, sizes, p)):
        m = r * c
        blocks = numel // m
        assert 1 <= count <= min(p, blocks)
        used |= {((first + j) % blocks) * m + k for j in range(count) for k in range(m)}
    return used


@pytest.mark.parametrize("numel,n,p", [(1000, 3, 4), (1000, 20, 1), (1050, 7, 2), (1000, 10, 1)])
def test_selection_sweeps_the_whole_store(numel, n, p):
    """Round robin: blocks are reused only once every block of the store has been selected."""
    used = _covered(numel, [(10, 10)] * n, p)
    assert len(used) == min(numel // 100, n * p) * 100


def test_mixed_sizes_still_cover_most_of_the_store():
    assert len(_covered(999, [(5, 7), (10, 10), (3, 3)] * 5, 2)) >= 0.85 * 999


def test_store_smaller_than_superweight_means_upsample():
    assert select_blocks(10, [(4, 4)], 4) == [(0, 0)]
    r, c = upsample_source(10, 4, 4)
    assert r * c <= 10 and r == c


def test_ssn_layout_one_tile_per_slot():
    sws, layout = ssn_layout([_slot("a", (4, 3)), _slot("b", (2, 2, 3, 3))])
    assert sws == [(4, 3), (2, 18)]
    assert [t.coefficients for ts in layout.values() for t in ts] == [0, 1]


def test_swn_layout_tiles_cover_each_slot_exactly():
    slots = [_slot("a", (4, 4), 0), _slot("b", (8, 6), 1), _slot("c", (2, 10), 2)]
    sws, layout = swn_layout(slots)
    for s in slots:
        covered = set()
        for t in layout[s.name]:
            r, c = sws[t.superweight]
            cells = {(t.row + i, t.col + j) for i in range(r) for j in range(c)}
            assert not covered & cells
            covered |= cells
        assert covered == {(i, j) for i in range(s.shape[0]) for j in range(s.shape[1])}
    # the smallest slot's top-left SuperWeight is reused by the larger ones
    first = layout["a"][0].superweight
    assert all(layout[n][0].superweight == first for n in ("b",))


def test_swn_hard_vs_soft_coefficients():
    slots = [_slot("a", (4, 4), 0), _slot("b", (4, 4), 1)]
    _, hard = swn_layout(slots, hard_sharing=True)
    _, soft = swn_layout(slots, hard_sharing=False)
    assert hard["a"][0].coefficients == hard["b"][0].coefficients
    assert soft["a"][0].coefficients != soft["b"][0].coefficients
