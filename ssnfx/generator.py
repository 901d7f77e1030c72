"""The parameter store: modules that generate every shared weight from a few trainable tensors.

One :class:`GroupGenerator` per parameter group holds the group's store (its Weight Templates) and
coefficients, and produces all of the group's weights in one call. Generation is batched: the
SuperWeights of one shape are combined by one gather and one multiply-add per candidate, whatever
the number of layers, and the slots of one shape and layout are assembled and scaled together.

Variance (the issue's "initialisation keeps each generated weight's variance"): the store starts as
``N(0, s^2)`` with ``s`` the RMS of the standard deviations of the model's own initial weights, and
each slot carries a fixed gain (a buffer, saved with the state_dict) that rescales its generated
weight to the standard deviation the layer was initialised with. Keeping ``s`` at the layers' own
scale keeps the gains near one, so optimizers see the same step sizes as in the unshared model.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .plan import GroupPlan, SharingPlan, Slot
from .selector import select_blocks, upsample_source

__all__ = ["GroupGenerator", "ParameterStore"]

#: Up to this many candidates are combined by a gather and multiply-add each; beyond, by a matmul.
_LOOP_CANDIDATES = 4


@dataclass
class _Bucket:
    """SuperWeight instances of one shape: generated together."""
    rows: int
    cols: int
    count: int                    # candidates combined (0: upsampled from the store's start)
    source: tuple[int, int] = (0, 0)   # upsample source block
    instances: list[tuple[int, int]] = field(default_factory=list)  # (superweight, coefficients)


@dataclass
class _SlotBucket:
    """Slots of one shape and tile layout: assembled together."""
    shape: tuple[int, ...]
    slots: list[int]
    tiles: list[tuple[int, int, int, int, int, bool]] = field(default_factory=list)
    # each tile: (bucket, row, col, rows, cols, whole); unless whole, its instance rows are in
    # buffer sb{k}_t{j}


class GroupGenerator(nn.Module):
    """Generates the weights of one parameter group (SSN Eq. 1-2, SWN Eq. 1).

    Parameters: ``store`` (the group's flat parameter pool), and by combiner ``phi`` (WAvg logits
    or Emb layer embeddings), ``proj_weight``/``proj_bias`` (the Emb layer), or ``alpha`` (SWN's
    linear coefficients). Buffer ``gain``: one fixed scale per slot. Calling it returns the
    group's weights, in the order of ``group.slots``.
    """

    def __init__(self, group: GroupPlan, slots: dict[str, Slot], combiner: str, emb_dim: int,
                 targets: dict[str, float], seed: int) -> None:
        super().__init__()
        self.combiner = combiner
        self.names = list(group.slots)
        p, n_coef = group.candidates, group.num_coefficients
        gen = torch.Generator().manual_seed(seed)
        scale = math.sqrt(sum(targets[n] ** 2 * slots[n].numel for n in self.names)
                          / sum(slots[n].numel for n in self.names)) or 1.0
        self.store = nn.Parameter(torch.randn(group.numel, generator=gen) * scale)
        if combiner == "wavg":
            self.phi = nn.Parameter(_orthogonal(n_coef, p, gen))
        elif combiner == "emb":
            self.phi = nn.Parameter(_orthogonal(n_coef, emb_dim, gen))
            bound = 1 / math.sqrt(emb_dim)
            self.proj_weight = nn.Parameter(torch.empty(p, emb_dim).uniform_(-bound, bound,
                                                                             generator=gen))
            self.proj_bias = nn.Parameter(torch.zeros(p))
        elif combiner == "linear":
            self.alpha = nn.Parameter(_orthogonal(n_coef, p, gen))
        self.register_buffer("gain", torch.ones(len(self.names)))
        #: Called as ``hook(slot_index, grad)`` with each generated weight's gradient (refine).
        self.hook: Callable[[int, torch.Tensor], None] | None = None
        self._build(group, slots)
        with torch.no_grad():
            if combiner == "linear":
                # Unit norm over the candidates each row actually combines, so that a sum of
                # independent candidates keeps the store's variance.
                for k, b in enumerate(self._buckets):
                    rows, used = getattr(self, f"b{k}_coef"), max(b.count, 1)
                    a = self.alpha[rows, :used]
                    self.alpha[rows, :used] = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
            raw = self.forward()
            for i, (name, w) in enumerate(zip(self.names, raw)):
                std = float(w.float().std()) if w.numel() > 1 else float(w.abs().mean())
                self.gain[i] = targets[name] / std if std > 0 else 1.0

    # ---- static structure ---------------------------------------------------------------------
    def _build(self, group: GroupPlan, slots: dict[str, Slot]) -> None:
        """(Re)build the static structure: buckets and the index buffers (non-persistent)."""
        for name in list(self._non_persistent_buffers_set):
            del self._buffers[name]
        self._non_persistent_buffers_set.clear()
        device = self.store.device
        self._group = group
        picks = select_blocks(group.numel, group.superweights, group.candidates)
        buckets: dict[tuple[int, int], _Bucket] = {}
        where: dict[tuple[int, int], tuple[int, int]] = {}  # instance -> (bucket, row)
        for name in self.names:
            for t in group.layout[name]:
                inst = (t.superweight, t.coefficients)
                if inst in where:
                    continue
                r, c = group.superweights[t.superweight]
                if (r, c) not in buckets:
                    count = picks[t.superweight][1]
                    src = upsample_source(group.numel, r, c) if count == 0 else (0, 0)
                    buckets[(r, c)] = _Bucket(r, c, count, src)
                b = buckets[(r, c)]
                where[inst] = (list(buckets).index((r, c)), len(b.instances))
                b.instances.append(inst)
        self._buckets = list(buckets.values())
        for k, b in enumerate(self._buckets):
            coef = torch.tensor([c for _, c in b.instances], dtype=torch.long, device=device)
            self.register_buffer(f"b{k}_coef", coef, persistent=False)
            if b.count:
                blocks = group.numel // (b.rows * b.cols)
                idx = [[(picks[sw][0] + j) % blocks for j in range(b.count)]
                       for sw, _ in b.instances]
                self.register_buffer(f"b{k}_blocks", torch.tensor(idx, dtype=torch.long,
                                                                  device=device),
                                     persistent=False)
        sbs: dict[tuple, _SlotBucket] = {}
        for i, name in enumerate(self.names):
            tiles = group.layout[name]
            sig = (slots[name].shape, tuple((t.row, t.col, *group.superweights[t.superweight])
                                            for t in tiles))
            sbs.setdefault(sig, _SlotBucket(slots[name].shape, [])).slots.append(i)
        self._slot_buckets = list(sbs.values())
        for k, sb in enumerate(self._slot_buckets):
            tiles0 = group.layout[self.names[sb.slots[0]]]
            for j, t0 in enumerate(tiles0):
                r, c = group.superweights[t0.superweight]
                rows = [where[(group.layout[self.names[i]][j].superweight,
                               group.layout[self.names[i]][j].coefficients)] for i in sb.slots]
                bucket, picked = rows[0][0], [row for _, row in rows]
                # A tile that takes its bucket's instances in order needs no index_select.
                whole = picked == list(range(len(self._buckets[bucket].instances)))
                sb.tiles.append((bucket, t0.row, t0.col, r, c, whole))
                if not whole:
                    self.register_buffer(f"sb{k}_t{j}", torch.tensor(picked, device=device),
                                         persistent=False)
            self.register_buffer(f"sb{k}_slots", torch.tensor(sb.slots, device=device),
                                 persistent=False)

    # ---- generation -----------------------------------------------------------------------------
    def _coefficients(self, coef: torch.Tensor, count: int) -> torch.Tensor | None:
        """Mixing coefficients of ``count`` candidates for the given coefficient rows."""
        if self.combiner == "wavg":
            return torch.softmax(self.phi.index_select(0, coef)[:, :count], dim=1)
        if self.combiner == "emb":  # SSN Eq. 2
            logits = F.linear(self.phi.index_select(0, coef), self.proj_weight[:count],
                              self.proj_bias[:count])
            return torch.softmax(logits, dim=1)
        if self.combiner == "linear":  # SWN Eq. 1
            return self.alpha.index_select(0, coef)[:, :count]
        return None

    def _superweights(self, k: int, b: _Bucket) -> torch.Tensor:
        """All SuperWeight instances of bucket ``k``: ``(instances, rows * cols)``."""
        m = b.rows * b.cols
        coef = getattr(self, f"b{k}_coef")
        if b.count == 0:  # store smaller than the SuperWeight: upsample its largest fitting block
            r, c = b.source
            src = self.store[: r * c].view(1, 1, r, c)
            base = F.interpolate(src, size=(b.rows, b.cols), mode="bilinear",
                                 align_corners=False).reshape(1, m)
            if self.combiner == "linear":  # one candidate: its coefficient is a learned scale
                return base * self._coefficients(coef, 1)
            return base.expand(len(b.instances), m)  # a softmax over one candidate is 1
        blocks = getattr(self, f"b{k}_blocks")
        view = self.store[: (self.store.numel() // m) * m].view(-1, m)
        if self.combiner == "rr":
            return view.index_select(0, blocks[:, 0])
        alpha = self._coefficients(coef, b.count)
        if b.count > _LOOP_CANDIDATES:
            # Many candidates: one (instances x blocks) mixing matrix and one matmul, instead of
            # a gather per candidate; its cost is instances x store size, whatever P is.
            if alpha is None:
                alpha = torch.full(blocks.shape, 1.0 / b.count, dtype=view.dtype,
                                   device=view.device)
            mix = torch.zeros(blocks.shape[0], view.shape[0], dtype=view.dtype,
                              device=view.device).scatter_add(1, blocks, alpha.to(view.dtype))
            return mix @ view
        out = None
        for j in range(b.count):
            cand = view.index_select(0, blocks[:, j])
            if alpha is None:  # avg
                out = cand if out is None else out + cand
            else:
                out = cand * alpha[:, j : j + 1] if out is None else torch.addcmul(
                    out, cand, alpha[:, j : j + 1])
        return out / b.count if alpha is None else out

    def candidates_of(self, superweight: int, coefficients: int) -> torch.Tensor:
        """The candidate blocks one SuperWeight instance combines: ``(count, rows, cols)``."""
        for k, b in enumerate(self._buckets):
            if (superweight, coefficients) in b.instances:
                row = b.instances.index((superweight, coefficients))
                if b.count == 0:
                    r, c = b.source
                    src = self.store[: r * c].view(1, 1, r, c)
                    return F.interpolate(src, size=(b.rows, b.cols), mode="bilinear",
                                         align_corners=False).view(1, b.rows, b.cols)
                m = b.rows * b.cols
                view = self.store[: (self.store.numel() // m) * m].view(-1, m)
                blocks = getattr(self, f"b{k}_blocks")[row]
                return view.index_select(0, blocks).view(-1, b.rows, b.cols)
        raise KeyError((superweight, coefficients))

    def forward(self) -> tuple[torch.Tensor, ...]:
        instances = [self._superweights(k, b) for k, b in enumerate(self._buckets)]
        weights: list[torch.Tensor | None] = [None] * len(self.names)
        for k, sb in enumerate(self._slot_buckets):
            n = len(sb.slots)
            bands: dict[int, list[torch.Tensor]] = {}
            for j, (bucket, row, col, r, c, whole) in enumerate(sb.tiles):
                src = instances[bucket]
                tile = src if whole else src.index_select(0, getattr(self, f"sb{k}_t{j}"))
                bands.setdefault(row, []).append(tile.view(n, r, c))
            parts = [torch.cat(ts, dim=2) if len(ts) > 1 else ts[0] for ts in bands.values()]
            w = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
            w = w * self.gain.index_select(0, getattr(self, f"sb{k}_slots")).view(n, 1, 1)
            for i, wi in zip(sb.slots, w.view(n, *sb.shape).unbind(0)):
                if self.hook is not None and wi.requires_grad:
                    wi.register_hook(lambda g, i=i: self.hook(i, g))  # type: ignore[misc]
                weights[i] = wi
        return tuple(weights)  # type: ignore[arg-type]


def _orthogonal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """Orthogonal initialisation (SSN Sec. 3.1.2: layer features start far apart)."""
    a = torch.randn(max(rows, cols), min(rows, cols), generator=gen)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    return (q if rows >= cols else q.T).contiguous()


class ParameterStore(nn.Module):
    """All groups' generators, plus the plan they implement (``store.plan``).

    Lives at the root of the shared GraphModule as ``ssnfx``, so its state_dict keys are
    ``ssnfx.<group>.store`` and so on.
    """

    def __init__(self, plan: SharingPlan, targets: dict[str, float]) -> None:
        super().__init__()
        self.plan = plan
        slots = {s.name: s for s in plan.slots}
        seed = int(plan.hyper.get("seed", 0))
        emb_dim = int(plan.hyper.get("emb_dim", 24))
        for i, g in enumerate(plan.groups):
            self.add_module(g.name, GroupGenerator(g, slots, plan.combiner, emb_dim, targets,
                                                   seed * 1000 + i))

    def generate(self) -> dict[str, torch.Tensor]:
        """Every shared weight by slot name (used by fold)."""
        out: dict[str, torch.Tensor] = {}
        for g in self.plan.groups:
            out.update(zip(g.slots, getattr(self, g.name)()))
        return out
