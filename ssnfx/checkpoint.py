"""Checkpoints: the SharingPlan as JSON plus the shared model's state_dict; nothing is unpickled.

The file is written with ``torch.save`` as ``{"format", "plan" (a JSON string), "state_dict"}``
and read with ``torch.load(weights_only=True)``, which only accepts tensors and plain containers.
Loading re-traces the user's model, re-applies the plan and loads the weights (the torchao way).
"""
from __future__ import annotations

import os
import pickle
import zipfile
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ._io import write_atomic
from .errors import CheckpointError, PlanError
from .passes.rewrite import STORE, rewrite
from .passes.trace import trace
from .plan import SharingPlan

__all__ = ["save", "load", "FORMAT"]

FORMAT = "ssnfx-checkpoint-1"


def save(shared: fx.GraphModule, path: str | os.PathLike[str],
         extra: dict[str, Any] | None = None) -> None:
    """Write ``shared``'s plan and state_dict to ``path`` atomically.

    Args:
        shared: a model from :func:`ssnfx.share` or :func:`ssnfx.rewrite`.
        path: the file to write; it is replaced only once fully written.
        extra: more tensors/containers to store beside (e.g. an optimizer's state_dict).

    Example:
        >>> import os, tempfile, torch, ssnfx
        >>> net = lambda: torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
        >>> shared = ssnfx.share(net(), budget=0.5)
        >>> path = os.path.join(tempfile.mkdtemp(), "shared.pt")
        >>> ssnfx.save(shared, path)
        >>> again = ssnfx.load(net(), path)
        >>> x = torch.randn(3, 8)
        >>> torch.equal(again(x), shared(x))
        True
    """
    store = getattr(shared, STORE, None)
    if store is None or not hasattr(store, "plan"):
        raise CheckpointError(f"save expects a shared model (from ssnfx.share); "
                              f"{type(shared).__name__} has no parameter store")
    payload = {"format": FORMAT, "plan": store.plan.to_json(), "state_dict": shared.state_dict()}
    if extra:
        payload["extra"] = extra
    write_atomic(path, lambda tmp: torch.save(payload, tmp))


def read(path: str | os.PathLike[str]) -> tuple[SharingPlan, dict[str, Any], dict[str, Any]]:
    """The plan, state_dict and extras of a checkpoint, read with ``weights_only=True``."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {os.fspath(path)!r}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{os.fspath(path)!r} holds objects other than tensors and plain containers; ssnfx "
            f"never unpickles code, so it was refused ({str(e).splitlines()[0]})") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{os.fspath(path)!r} is not a readable checkpoint (truncated or "
                              f"corrupt?): {type(e).__name__}: {str(e).splitlines()[0]}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{os.fspath(path)!r} is not an ssnfx checkpoint (no "
                              f"format={FORMAT!r} entry); write one with ssnfx.save")
    try:
        plan = SharingPlan.from_json(payload["plan"])
    except PlanError as e:
        raise CheckpointError(f"{os.fspath(path)!r}: {e}") from e
    return plan, payload["state_dict"], payload.get("extra", {})


def load(model: nn.Module, path: str | os.PathLike[str]) -> fx.GraphModule:
    """Re-create a shared model from a fresh ``model`` and a checkpoint written by :func:`save`.

    Raises:
        CheckpointError: the file is missing, truncated, not an ssnfx checkpoint, holds pickled
            objects, or its plan or weights do not fit ``model``.
    """
    plan, state, _ = read(path)
    gm = trace(model, leaf_modules=plan.trace.get("leaf_modules", ()))
    try:
        shared = rewrite(gm, plan)
    except PlanError as e:
        raise CheckpointError(f"{os.fspath(path)!r} does not fit {type(model).__name__}: {e}") \
            from e
    try:
        result = shared.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(f"{os.fspath(path)!r}: weights do not fit the shared "
                              f"{type(model).__name__}: {e}") from e
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{os.fspath(path)!r}: state_dict does not match the shared "
            f"{type(model).__name__}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}")
    return shared
