"""The parameter store: every parameter group's generator, at the root of a shared model.

:class:`ParameterStore` lives at the root of the shared GraphModule as ``ssnfx`` (its state_dict
keys are ``ssnfx.<group>.store`` and so on) and holds one
:class:`~ssnfx.core.generator.GroupGenerator` per group of the plan it implements.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ssnfx.core.generator import GroupGenerator
from ssnfx.core.plan import SharingPlan

__all__ = ["ParameterStore"]


class ParameterStore(nn.Module):
    """All groups' generators, plus the plan they implement (``store.plan``).

    Lives at the root of the shared GraphModule as ``ssnfx``, so its state_dict keys are
    ``ssnfx.<group>.store`` and so on.
    """

    def __init__(self, plan: SharingPlan, targets: dict[str, float], *,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.plan = plan
        slots = {s.name: s for s in plan.slots}
        seed, components = plan.options.seed, plan.options.components
        for i, g in enumerate(plan.groups):
            self.add_module(g.name, GroupGenerator(g, slots, plan.combiner, components, targets,
                                                   seed * 1000 + i,
                                                   just_in_time=plan.just_in_time(g),
                                                   device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        """Re-initialise every group (:meth:`GroupGenerator.reset_parameters`): the recipe's
        second step for a model shared on the meta device and materialised with ``to_empty``
        (:func:`ssnfx.core.initialization.initialize` also initialises the model's private
        parameters).

        Example:
            >>> import torch, ssnfx
            >>> with torch.device("meta"):
            ...     net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
            >>> shared = ssnfx.share(net, budget=0.5)
            >>> shared.ssnfx.g0.store.is_meta
            True
            >>> shared.to_empty(device="cpu").ssnfx.reset_parameters()
            >>> bool(torch.isfinite(shared.ssnfx.g0.store).all())
            True
        """
        for g in self.children():
            g.reset_parameters()

    def generate(self, *, merge_equal: bool = False, just_in_time: bool = True
                 ) -> dict[str, torch.Tensor]:
        """Every shared weight by slot name (used by fold); with ``merge_equal``, slots whose
        weights are exactly equal (hard sharing) map to one tensor; with ``just_in_time=False``
        only those generated in batch (:meth:`GroupGenerator.forward`)."""
        out: dict[str, torch.Tensor] = {}
        for g in self.plan.groups:
            weights = getattr(self, g.name)(just_in_time=just_in_time)
            out.update((n, w) for n, w in zip(g.slots, weights) if w is not None)
        return _merge_equal(out) if merge_equal else out


def _merge_equal(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map slots whose generated weights are exactly equal to one tensor (hard sharing)."""
    out: dict[str, torch.Tensor] = {}
    seen: dict[tuple, list[torch.Tensor]] = {}
    for name, w in values.items():
        # A cheap fingerprint first, so that only likely twins are compared in full.
        flat = w.reshape(-1)
        key = (tuple(w.shape), w.dtype, float(flat[:64].sum()), float(flat.sum()))
        same = next((u for u in seen.get(key, ()) if torch.equal(u, w)), None)
        if same is None:
            seen.setdefault(key, []).append(w)
            same = w
        out[name] = same
    return out
