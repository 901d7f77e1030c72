"""Export a folded model to TorchScript (``.pt``) and to torch.export (``.pt2``).

Each export is checked against the folded model on the example inputs before the file is moved
into place, so a file that exists is a file that reproduces the model.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from ._io import atomic_path
from .errors import ExportError
from .markers import store_of

__all__ = ["export_torchscript", "export_pt2", "check_outputs"]


def _prepare(folded: nn.Module, example_inputs: Any) -> tuple[tuple[Any, ...], Any]:
    if store_of(folded) is not None:
        raise ExportError("export expects a folded model: call ssnfx.fold(shared) first")
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) \
        else (example_inputs,)
    folded.eval()
    try:
        with torch.no_grad():
            reference = folded(*inputs)
    except Exception as e:
        raise ExportError(f"the folded model fails on the example inputs, so nothing was "
                          f"exported: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    return inputs, reference


def check_outputs(actual: Any, expected: Any, atol: float, rtol: float, what: str) -> None:
    """Raise ExportError unless two (nested) outputs agree."""
    try:
        torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)
    except AssertionError as e:
        raise ExportError(f"{what} does not reproduce the folded model: {e}") from e


def export_torchscript(folded: nn.Module, example_inputs: Any, path: str | os.PathLike[str],
                       atol: float = 1e-5, rtol: float = 1e-5) -> None:
    """Trace ``folded`` with TorchScript, check it, and save it to ``path``.

    TorchScript is deprecated in torch 2.14; its FutureWarning is silenced here because users
    asked for the format. Prefer :func:`export_pt2` where torch.export applies.

    Example:
        >>> import os, tempfile, torch, ssnfx
        >>> folded = ssnfx.fold(ssnfx.share(torch.nn.Sequential(torch.nn.Linear(8, 4)), 0.9))
        >>> path = os.path.join(tempfile.mkdtemp(), "m.pt")
        >>> ssnfx.export_torchscript(folded, torch.randn(2, 8), path)
        >>> torch.jit.load(path)(torch.ones(1, 8)).shape
        torch.Size([1, 4])
    """
    inputs, reference = _prepare(folded, example_inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            scripted = torch.jit.trace(folded, inputs, check_trace=False)
        except Exception as e:
            raise ExportError(f"TorchScript could not trace {type(folded).__name__}: "
                              f"{type(e).__name__}: {e}") from e
        with atomic_path(path) as tmp:
            torch.jit.save(scripted, str(tmp))
            loaded = torch.jit.load(str(tmp))
            with torch.no_grad():
                check_outputs(loaded(*inputs), reference, atol, rtol, "the TorchScript export")


def export_pt2(folded: nn.Module, example_inputs: Any, path: str | os.PathLike[str],
               atol: float = 1e-5, rtol: float = 1e-5,
               dynamic_shapes: dict[str, Any] | Sequence[Any] | None = None) -> None:
    """Export ``folded`` with ``torch.export``, check it, and save it to ``path`` (``.pt2``).

    Example:
        >>> import os, tempfile, torch, ssnfx
        >>> folded = ssnfx.fold(ssnfx.share(torch.nn.Sequential(torch.nn.Linear(8, 4)), 0.9))
        >>> path = os.path.join(tempfile.mkdtemp(), "m.pt2")
        >>> ssnfx.export_pt2(folded, torch.randn(2, 8), path)
        >>> torch.export.load(path).module()(torch.ones(2, 8)).shape
        torch.Size([2, 4])
    """
    inputs, reference = _prepare(folded, example_inputs)
    try:
        program = torch.export.export(folded, inputs, dynamic_shapes=dynamic_shapes)
    except Exception as e:
        raise ExportError(f"torch.export could not export {type(folded).__name__}: "
                          f"{type(e).__name__}: {e}") from e
    with atomic_path(path) as tmp:
        torch.export.save(program, str(tmp))
        loaded = torch.export.load(str(tmp)).module()
        with torch.no_grad():
            check_outputs(loaded(*inputs), reference, atol, rtol, "the torch.export program")
