"""Checkpoints: the SharingPlan as JSON plus the shared model's state_dict; nothing is unpickled.

By default a checkpoint is a safetensors file: the state_dict's tensors, with the plan (and any
``extra``, as JSON whose tensors are entries of the file: :mod:`ssnfx.tensor_json`) in its
metadata. A path ending in ``.pt`` or ``.pth`` gets the older format, which ``.pt``
checkpoints written so far have: ``torch.save`` of ``{"format", "plan" (a JSON string),
"state_dict", "extra"}``, read with ``torch.load(weights_only=True)``, which accepts only tensors
and plain containers. Either is recognised by its content, not its name. Loading re-traces the
user's model, re-applies the plan and loads the weights (the torchao way).
"""
from __future__ import annotations

import collections
import json
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, overload

import safetensors
import safetensors.torch
import torch
import torch.nn as nn

from ssnfx import tensor_json
from ssnfx.core._io import write_atomic
from ssnfx.core.errors import CheckpointError, PlanError
from ssnfx.core.graph_module import release
from ssnfx.core.markers import require_store
from ssnfx.core.members import Members
from ssnfx.core.plan import SharingPlan
from ssnfx.core.shared_model import PLAN_FILE, check_bound
from ssnfx.passes.rewriting import bind, rewrite
from ssnfx.passes.tracing import trace

__all__ = ["save", "load", "read", "check_loadable", "with_aliases", "FORMAT",
           "SAFETENSORS_FORMAT", "TORCH_SUFFIXES"]

#: The ``format`` entry of a torch-format checkpoint.
FORMAT = "ssnfx-checkpoint-1"
#: The ``format`` entry of a safetensors checkpoint's metadata.
SAFETENSORS_FORMAT = "ssnfx-safetensors-1"
#: Paths with these suffixes get the torch format; every other path safetensors.
TORCH_SUFFIXES = (".pt", ".pth")
#: Where the tensors of ``extra`` go in a safetensors checkpoint (no state_dict key has a "/").
EXTRA_PREFIX = "ssnfx.extra/"


def save(shared: nn.Module, path: str | os.PathLike[str],
         extra: dict[str, Any] | None = None) -> None:
    """Write ``shared``'s plan and state_dict to ``path`` atomically.

    Args:
        shared: a model from :func:`ssnfx.share` or :func:`ssnfx.rewrite`.
        path: the file to write; it is replaced only once fully written. Safetensors, the
            plan in its metadata, unless the name ends in ``.pt``/``.pth`` (the torch format
            of older checkpoints).
        extra: more tensors/containers to store beside (e.g. an optimizer's state_dict):
            what :func:`load` reads back (see :func:`check_loadable`), else a
            ``CheckpointError`` before anything is written.

    Example:
        >>> import os, tempfile, torch, ssnfx
        >>> net = lambda: torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
        >>> shared = ssnfx.share(net(), budget=0.5)
        >>> path = os.path.join(tempfile.mkdtemp(), "shared.safetensors")
        >>> ssnfx.save(shared, path)
        >>> again = ssnfx.load(net(), path)
        >>> x = torch.randn(3, 8)
        >>> torch.equal(again(x), shared(x))
        True
    """
    store = require_store(shared, "save", CheckpointError)
    try:
        check_bound(shared)
    except PlanError as e:
        raise CheckpointError(f"nothing was written to {os.fspath(path)!r}: {e}") from e
    if extra:
        check_loadable(extra, "extra")  # before anything is written: load would refuse it
    plan, state = store.plan.to_json(), shared.state_dict()
    if Path(path).suffix in TORCH_SUFFIXES:
        payload = {"format": FORMAT, "plan": plan, "state_dict": state}
        if extra:
            payload["extra"] = extra
        write_atomic(path, lambda tmp: _write(lambda f: torch.save(payload, f), tmp))
        return
    text, extra_tensors = tensor_json.encode(extra or {}, EXTRA_PREFIX)
    tensors = _unshared({**state, **extra_tensors})
    metadata = {"format": SAFETENSORS_FORMAT, "plan": plan, "extra": text}
    write_atomic(path, lambda tmp: _write(
        lambda f: f.write(safetensors.torch.save(tensors, metadata)), tmp))


def _write(dump: Callable[[Any], Any], tmp: os.PathLike[str]) -> None:
    # Through a Python file, so that a failed write is the OSError it is (ENOSPC: "No space
    # left on device"), not torch's "enforce fail at inline_container.cc".
    with open(tmp, "wb") as f:
        dump(f)


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors, none sharing memory with another (safetensors refuses that): a tied
    weight is written under each name, and load_state_dict ties it again."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for name, t in tensors.items():
        t = t.detach().contiguous()
        key = (t.untyped_storage().data_ptr(), t.device.index or 0) if t.numel() else None
        if key is not None and key in seen:
            t = t.clone()
        elif key is not None:
            seen.add(key)
        out[name] = t
    return out


#: What ``torch.load(weights_only=True)`` reads back, by exact type: a subclass (numpy's
#: float64 is a float, an IntEnum an int, a namedtuple a tuple) pickles as its own class,
#: which the weights-only unpickler refuses.
_PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes, bytearray,
                    torch.Size, torch.dtype, torch.device, torch.Tensor, nn.Parameter})
_CONTAINERS = frozenset({dict, collections.OrderedDict, list, tuple, set})


def check_loadable(value: Any, where: str = "extra") -> None:
    """Raise :class:`CheckpointError` naming the first entry of ``value`` that
    ``torch.load(weights_only=True)`` (so :func:`load`) would refuse to read back.

    Example:
        >>> import pathlib
        >>> check_loadable({"step": 100, "lr": [0.1, 0.01]})
        >>> check_loadable({"run": {"out": pathlib.PurePosixPath("runs/a")}})
        Traceback (most recent call last):
        ...
        ssnfx.core.errors.CheckpointError: extra['run']['out'] is a pathlib.PurePosixPath, ...
    """
    kind = type(value)
    if kind in _PLAIN:
        return
    if kind in _CONTAINERS:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(value, dict):
                check_loadable(key, f"a key of {where}")
            check_loadable(item, f"{where}[{key!r}]" if kind is not set else f"an item of {where}")
        return
    name = f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins.")
    raise CheckpointError(
        f"{where} is a {name}, which ssnfx.load would refuse to read back (it unpickles only "
        f"tensors, numbers, strings and plain lists, tuples, sets and dicts): store it as one "
        f"of those, e.g. float(x) for a numpy number, str(p) for a path, vars(ns) for an "
        f"argparse.Namespace; nothing was written")


def read(path: str | os.PathLike[str]) -> tuple[SharingPlan, dict[str, Any], dict[str, Any]]:
    """The plan, state_dict and extras of a checkpoint (safetensors, or the older format read
    with ``weights_only=True``)."""
    where = repr(os.fspath(path))
    if os.path.isdir(path):
        return _read_pretrained(Path(path), where)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {where}: check the path, or write one with "
                              f"ssnfx.save")
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # a safetensors header: its length, then JSON
        return _read_safetensors(path, where)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's weights-only unpickler names the global it refused; anything else it rejects
        # (an unknown opcode) is a damaged file, not an attempt to run code.
        refused = re.search(r"GLOBAL ([\w.]+)", str(e))
        if refused is None:
            # Not torch's first line: it advises weights_only=False, which ssnfx never does.
            detail = re.search(r"Unsupported [^\n.]*", str(e))
            raise CheckpointError(f"{where} is not a readable checkpoint (truncated or corrupt?): "
                                  f"{detail.group(0) if detail else 'UnpicklingError'}; save it "
                                  f"again with ssnfx.save") from e
        raise CheckpointError(
            f"{where} tries to unpickle {refused.group(1)}; ssnfx never unpickles code or "
            f"objects, so it was refused. A checkpoint holds only tensors and plain containers: "
            f"write it with ssnfx.save, with tensors and dicts as extras") from e
    except Exception as e:  # truncated files fail in many ways: zip, EOF, OS and index errors
        detail = ": ".join(x for x in (type(e).__name__, _first_line(e)) if x)
        raise CheckpointError(f"{where} is not a readable checkpoint (truncated or corrupt?): "
                              f"{detail}; save it again with ssnfx.save") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not an ssnfx checkpoint (no format={FORMAT!r} "
                              f"entry); write one with ssnfx.save")
    missing = [k for k in ("plan", "state_dict") if k not in payload]
    if missing:
        raise CheckpointError(f"{where} has no {' or '.join(missing)} entry (damaged or edited); "
                              f"save it again with ssnfx.save")
    if not isinstance(payload["plan"], str):
        raise CheckpointError(f"{where}: the plan entry must be the plan's JSON text, got "
                              f"{type(payload['plan']).__name__}; save it again with ssnfx.save")
    if not isinstance(payload["state_dict"], dict):
        raise CheckpointError(f"{where}: the state_dict entry must be a dict of tensors, got "
                              f"{type(payload['state_dict']).__name__}; save it again with "
                              f"ssnfx.save")
    return _plan(payload["plan"], where), payload["state_dict"], payload.get("extra", {})


def _plan(text: str, where: str) -> SharingPlan:
    try:
        return SharingPlan.from_json(text)
    except PlanError as e:
        raise CheckpointError(f"{where}: {e}") from e


def _read_safetensors(path: str | os.PathLike[str], where: str
                      ) -> tuple[SharingPlan, dict[str, Any], dict[str, Any]]:
    try:
        with safetensors.safe_open(os.fspath(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # truncated or damaged: safetensors' own errors
        raise CheckpointError(f"{where} is not a readable checkpoint (truncated or corrupt?): "
                              f"{type(e).__name__}: {_first_line(e)}; save it again with "
                              f"ssnfx.save") from e
    if metadata.get("format") != SAFETENSORS_FORMAT:
        raise CheckpointError(f"{where} is a safetensors file but not an ssnfx checkpoint (no "
                              f"format={SAFETENSORS_FORMAT!r} in its metadata); write one with "
                              f"ssnfx.save")
    if "plan" not in metadata:
        raise CheckpointError(f"{where} has no plan in its metadata (damaged or edited); save "
                              f"it again with ssnfx.save")
    plan = _plan(metadata["plan"], where)
    state = {k: t for k, t in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    try:
        extra = tensor_json.decode(metadata.get("extra", "{\"dict\": []}"), tensors)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}; save it again with ssnfx.save") from e
    return plan, state, extra


def _read_pretrained(folder: Path, where: str
                     ) -> tuple[SharingPlan, dict[str, Any], dict[str, Any]]:
    """A shared Hugging Face model's ``save_pretrained`` folder (a Trainer checkpoint): the
    plan in :data:`PLAN_FILE`, the weights in ``model.safetensors`` or its shards."""
    if not (folder / PLAN_FILE).is_file():
        raise CheckpointError(f"{where} is a folder without {PLAN_FILE}: not a save_pretrained "
                              f"folder of a shared model (pass a checkpoint file of ssnfx.save, "
                              f"or the folder a shared model's save_pretrained wrote)")
    plan = _plan((folder / PLAN_FILE).read_text(), where)
    index = folder / "model.safetensors.index.json"
    try:
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) \
            if index.is_file() else ["model.safetensors"]
    except (ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{where}: its {index.name} is damaged: {e}") from e
    state: dict[str, Any] = {}
    for name in files:
        if not (folder / name).is_file():
            raise CheckpointError(f"{where} has {PLAN_FILE} but no {name}: was it written by "
                                  f"save_pretrained with safe_serialization?")
        try:
            state.update(safetensors.torch.load_file(folder / name))
        except Exception as e:
            raise CheckpointError(f"{where}/{name} is not readable (truncated or corrupt?): "
                                  f"{type(e).__name__}: {_first_line(e)}") from e
    return plan, state, {}


def with_aliases(state: dict[str, Any], plan: SharingPlan) -> dict[str, Any]:
    """``state`` with every name of a private tied parameter: the user's class lists each (a
    module registered twice, a tied head), which checkpoints of the graph form did not."""
    state = dict(state)
    for s in plan.slots:
        for alias in s.aliases if not s.shared and s.name in state else ():
            state.setdefault(alias, state[s.name])
    return state


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else ""


@overload
def load(model: nn.Module, path: str | os.PathLike[str], *,
         return_extra: Literal[False] = False) -> nn.Module: ...
@overload
def load(model: nn.Module, path: str | os.PathLike[str], *,
         return_extra: Literal[True]) -> tuple[nn.Module, dict[str, Any]]: ...
def load(model: nn.Module, path: str | os.PathLike[str], *, return_extra: bool = False
         ) -> nn.Module | tuple[nn.Module, dict[str, Any]]:
    """Re-create a shared model from a fresh ``model`` and a checkpoint written by :func:`save`.

    Args:
        model: a fresh instance of the model the checkpoint was saved from.
        path: the checkpoint file, or the folder a shared Hugging Face model's
            ``save_pretrained`` wrote (a Trainer checkpoint): weights and its plan file.
        return_extra: also return the ``extra`` dict given to :func:`save` (``{}`` if none),
            e.g. an optimizer's state_dict, to resume training. It is read with the rest,
            ``weights_only=True``.

    Returns:
        The shared model, or ``(shared, extra)`` with ``return_extra=True``.

    Raises:
        CheckpointError: the file is missing, truncated, not an ssnfx checkpoint, holds pickled
            objects, or its plan or weights do not fit ``model``.

    Example:
        >>> import os, tempfile, torch, ssnfx
        >>> net = lambda: torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
        >>> shared = ssnfx.share(net(), budget=0.5)
        >>> opt = torch.optim.Adam(shared.parameters())
        >>> path = os.path.join(tempfile.mkdtemp(), "step.safetensors")
        >>> ssnfx.save(shared, path, extra={"optimizer": opt.state_dict(), "step": 100})
        >>> again, extra = ssnfx.load(net(), path, return_extra=True)
        >>> torch.optim.Adam(again.parameters()).load_state_dict(extra["optimizer"])
        >>> extra["step"]
        100
    """
    plan, state, extra = read(path)
    # The leaves found when the plan was made are given as leaves: the same graph, no search.
    recorded = plan.trace
    gm = trace(model, leaf_modules=[*recorded.get("leaf_modules", ()),
                                    *recorded.get("auto_leaves", {})],
               concrete_args=recorded.get("concrete_args") or None, auto_leaves=False)
    try:
        # One model comes back as its own class, several (ssnfx.ensemble.Members) as their graph.
        shared = rewrite(gm, plan) if isinstance(model, Members) else bind(model, gm, plan)
    except PlanError as e:
        raise CheckpointError(f"{os.fspath(path)!r} does not fit {type(model).__name__}: {e}; "
                              f"load it into a fresh instance of the model it was saved from") \
            from e
    finally:
        release(gm)
    state = with_aliases(state, plan)
    try:
        result = shared.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(f"{os.fspath(path)!r}: weights do not fit the shared "
                              f"{type(model).__name__} (edited, or written for another model; "
                              f"save it again with ssnfx.save): {e}") from e
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{os.fspath(path)!r}: state_dict does not match the shared "
            f"{type(model).__name__}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}; the file was edited or written for "
            f"another model: save the shared model again with ssnfx.save")
    return (shared, extra) if return_extra else shared
