"""The layer similarity matrix and recurrent folding (the soft-sharing poster: Savarese and Maire,
"Learning Implicitly Recurrent CNNs Through Parameter Sharing", ICLR 2019, "Folding learned
networks into explicitly recurrent forms": "LSM_ij = |cos(alpha_i, alpha_j)|").

Layers that draw on the same templates and mix them with proportional coefficients generate
proportional weights: the poster folds such a network into a recurrent form, one layer applied
where several were. In ssnfx two layers draw on the same templates when they sit in one group
and combine the same candidate blocks at the same places (SWN's SuperWeights, shared by the
layers of a canvas; under SSN, round robin gives every layer its own blocks until the store
wraps around, so there the LSM mostly says how alike the layers mix).

Where their weights are exactly equal (hard sharing, or a plan that ties their coefficients),
:func:`ssnfx.fold` stores the weight once: one Parameter under both names, the recurrent form.
:func:`layer_similarity` computes the matrix from a shared model's coefficients,
:func:`identical_weights` lists what fold stores once, and :func:`ssnfx.report` shows both.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssnfx.core.markers import store_of
from ssnfx.core.selector import select_blocks

__all__ = ["LayerSimilarity", "layer_similarity", "identical_weights"]


@dataclass
class LayerSimilarity:
    """The layer similarity matrix of a shared model.

    Attributes:
        names: the slots with learned coefficients, group by group in graph order.
        matrix: ``(n, n)`` ``|cos(alpha_i, alpha_j)|``; NaN where the two layers' coefficient
            rows differ in length (SWN slots made of different numbers of SuperWeights), and
            between a layer whose tiles each mix a single candidate and any layer that does not
            draw on the same templates (one coefficient per tile: the cosine is 1 whatever was
            learned; over the same templates it truly means proportional weights).
        same_templates: ``(n, n)`` True where the two layers draw on the same templates (same
            group, the same candidate blocks at the same places), so that ``|cos| = 1`` makes
            their weights proportional: one function up to a scale.
    """

    names: list[str]
    matrix: torch.Tensor
    same_templates: torch.Tensor

    def pairs(self, min_similarity: float = 0.0, same_templates: bool = False
              ) -> list[tuple[str, str, float]]:
        """Layer pairs ``(a, b, |cos|)`` at or above ``min_similarity``, most similar first;
        with ``same_templates`` only pairs that draw on the same templates."""
        i, j = torch.triu_indices(len(self.names), len(self.names), offset=1)
        values = self.matrix[i, j]
        keep = ~torch.isnan(values) & (values >= min_similarity)
        if same_templates:
            keep &= self.same_templates[i, j]
        order = torch.argsort(values[keep], descending=True, stable=True)
        i, j, values = i[keep][order], j[keep][order], values[keep][order]
        return [(self.names[a], self.names[b], float(v))
                for a, b, v in zip(i.tolist(), j.tolist(), values.tolist())]

    def near_identical(self, tolerance: float = 1e-3) -> list[tuple[str, str, float]]:
        """Pairs over the same templates with ``|cos| >= 1 - tolerance``: the layers the poster
        would fold into one (their weights are proportional)."""
        return self.pairs(1.0 - tolerance, same_templates=True)




def layer_similarity(shared: nn.Module) -> LayerSimilarity | None:
    """The LSM of a shared model: ``|cos|`` between the layers' mixing coefficients. A layer's
    row is the weights its tiles give the candidates they combine (the softmax of WAvg's logits,
    of Emb's projection, SWN's linear alpha), concatenated; layers whose rows differ in length
    (other candidate counts or tile counts) are not compared (NaN).

    Two layers draw on the same templates when they are in one group and every tile of theirs
    combines the same candidate blocks at the same place
    (:func:`ssnfx.core.selector.select_blocks`).

    Returns None when the model is not shared or has fewer than two layers with learned
    coefficients (combiners RR and Avg learn none).

    Example:
        >>> import torch, ssnfx
        >>> net = torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(3)])
        >>> cfg = ssnfx.ShareConfig(method="swn", options={"hard_sharing": True})
        >>> lsm = ssnfx.lsm.layer_similarity(ssnfx.share(net, 0.5, cfg))
        >>> [(a, b, round(v, 4)) for a, b, v in lsm.near_identical()][:2]
        [('0.weight', '1.weight', 1.0), ('0.weight', '2.weight', 1.0)]
    """
    store = store_of(shared)
    if store is None:
        return None
    names: list[str] = []
    rows: list[torch.Tensor] = []
    informative: list[bool] = []
    candidates: list[tuple] = []
    for g in store.plan.groups:
        gen = getattr(store, g.name)
        if not getattr(getattr(gen, "combiner", None), "learned", False):  # RR, Avg: all alike
            continue
        with torch.no_grad():
            mixing = {k: v.float() for k, v in gen.mixing_rows().items()}
        picks = select_blocks(g.numel, g.superweights, g.candidates)
        for name in g.slots:
            tiles = g.layout[name]
            names.append(name)
            parts = [mixing[(t.superweight, t.coefficients)] for t in tiles]
            rows.append(torch.cat(parts))
            informative.append(any(p.numel() > 1 for p in parts))
            # A candidate set is the block size and the blocks taken (count 0: the store's
            # upsampled start, the same for every SuperWeight of that size).
            # (Resized candidates are the same for every SuperWeight of a shape.)
            candidates.append((g.name, tuple(
                (t.row, t.col, *g.superweights[t.superweight],
                 *(picks[t.superweight] if g.selection == "blocks" else ()))
                for t in tiles)))
    if len(rows) < 2:
        return None
    n = len(rows)
    matrix = torch.full((n, n), float("nan"))
    by_length: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        by_length.setdefault(r.numel(), []).append(i)
    for idx in by_length.values():
        unit = F.normalize(torch.stack([rows[i] for i in idx]), dim=1)
        ix = torch.tensor(idx)
        matrix[ix[:, None], ix[None, :]] = (unit @ unit.T).abs().clamp_max(1.0)
    same = torch.tensor([[a == b for b in candidates] for a in candidates])
    blind = ~torch.tensor(informative)
    matrix[(blind[:, None] | blind[None, :]) & ~same] = float("nan")
    return LayerSimilarity(names, matrix, same)


@torch.no_grad()
def identical_weights(shared: nn.Module) -> list[list[str]]:
    """The layers whose generated weights are exactly equal, in sets: :func:`ssnfx.fold` stores
    each set as one Parameter (the recurrent form). Empty for a model that is not shared.

    Example:
        >>> import torch, ssnfx
        >>> net = torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(3)])
        >>> cfg = ssnfx.ShareConfig(method="swn", options={"hard_sharing": True})
        >>> ssnfx.lsm.identical_weights(ssnfx.share(net, 0.5, cfg))
        [['0.weight', '1.weight', '2.weight']]
    """
    store = store_of(shared)
    if store is None or not hasattr(store, "generate"):  # the search's provisional store
        return []
    sets: dict[int, list[str]] = {}
    for name, w in store.generate(merge_equal=True).items():
        sets.setdefault(id(w), []).append(name)
    return [names for names in sets.values() if len(names) > 1]
