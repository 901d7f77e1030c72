"""Variance: the scale a store starts at and the fixed gain that brings each generated weight to
the standard deviation its layer was initialised with.

The store starts as ``N(0, s^2)`` with ``s`` the RMS of the standard deviations of the model's own
initial weights (:func:`store_std`), and each slot carries a fixed gain (:func:`fitted_gain`,
a buffer saved with the state_dict) that rescales its generated weight to its layer's standard
deviation. Keeping ``s`` at the layers' own scale keeps the gains near one, so optimizers see the
same step sizes as in the unshared model.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch

__all__ = ["sample_std", "store_std", "fitted_gain"]

#: Elements a standard deviation is estimated from (a strided sample: 0.15% relative error).
_STD_SAMPLES = 1 << 18


def sample_std(t: torch.Tensor) -> float:
    """The standard deviation of ``t``, from an evenly strided sample of at most 2**18 elements.

    Example:
        >>> round(sample_std(torch.arange(10.0)), 4)
        3.0277
    """
    flat = t.detach().reshape(-1)
    step = max(1, flat.numel() // _STD_SAMPLES)
    return float(flat[::step].float().std()) if flat.numel() > 1 else 0.0


def store_std(targets: Iterable[tuple[float, int]]) -> float:
    """The standard deviation a store starts with: the RMS of its slots' target standard
    deviations, each weighted by its slot's size (``(std, numel)`` pairs), so that the gains
    that bring each generated weight to its target stay near one; 1.0 if that is zero.

    Example:
        >>> store_std([(0.1, 300), (0.2, 100)])
        0.13228756555322954
    """
    pairs = list(targets)
    return math.sqrt(sum(t * t * n for t, n in pairs) / sum(n for _, n in pairs)) or 1.0


def fitted_gain(weight: torch.Tensor, target: float) -> float:
    """The scale that brings ``weight``'s standard deviation to ``target``.

    A weight that is constant up to rounding (one parameter, or one upsampled from a single
    store parameter) has float noise for its spread, and scaling that to the target would blow
    it up by ~1e6: its magnitude is the scale matched then.

    Example:
        >>> round(fitted_gain(torch.tensor([1.0, -1.0, 1.0, -1.0]), 0.5), 4)
        0.433
        >>> fitted_gain(torch.full((3, 3), 2.0), 0.5)  # constant: its magnitude is matched
        0.25
    """
    scale = sample_std(weight)
    magnitude = float(weight.abs().mean())
    if scale <= 1e-4 * magnitude:
        scale = magnitude
    return target / scale if scale > 0 else 1.0
