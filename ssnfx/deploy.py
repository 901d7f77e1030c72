"""Export a folded model, checked: TorchScript (``.pt``), torch.export (``.pt2``), or a format of
your own.

Each format is one :class:`ExportFormat` in a registry: its name, file suffix, a writer that
saves the folded model and a loader that reads the file back into something callable.
:func:`export` writes to a temporary file, loads it, checks its outputs against the folded
model on the example inputs and only then moves it into place, so a file that exists is a file
that reproduces the model. Adding a format is one :func:`register_export_format` call.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ssnfx.core._io import atomic_path
from ssnfx.core.errors import ExportError
from ssnfx.core.markers import store_of
from ssnfx.core.registry import Registry

__all__ = ["ExportFormat", "EXPORT_FORMATS", "register_export_format", "export",
           "export_torchscript", "export_pt2", "check_outputs"]


@dataclass(frozen=True)
class ExportFormat:
    """A file format for folded models.

    Attributes:
        name: what users pass as ``format=`` (and ``ssnfx fold --format``).
        suffix: the file suffix, with its dot.
        write: ``write(folded, inputs, path, **options)`` saves ``folded`` (in eval mode) to
            ``path``; ``inputs`` is the tuple of example inputs, and keyword inputs come as
            ``kwargs=`` (only when there are any). Raise anything to refuse.
        load: ``load(path)`` returns a callable that runs the saved model on ``*inputs``.
        hint: what to suggest when the writer fails (appended to the error).
    """

    name: str
    suffix: str
    write: Callable[..., None]
    load: Callable[[str], Callable[..., Any]]
    hint: str = ""


def _check_format(name: str, fmt: ExportFormat) -> None:
    if not fmt.suffix.startswith("."):
        raise ValueError(f"export format {name!r}: suffix must start with '.', got "
                         f"{fmt.suffix!r}")


#: The registered formats by name.
EXPORT_FORMATS: Registry[ExportFormat] = Registry(
    "export format", "ssnfx.deploy.register_export_format", _check_format)


def register_export_format(fmt: ExportFormat) -> ExportFormat:
    """Make ``fmt`` known to :func:`export` and the command line (replacing one so named).

    Example:
        >>> from ssnfx.deploy import EXPORT_FORMATS
        >>> sorted(EXPORT_FORMATS)
        ['pt2', 'torchscript']
    """
    return EXPORT_FORMATS.register(fmt.name, fmt)


def _prepare(folded: nn.Module, example_inputs: Any
             ) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
    """``(args, kwargs, reference output)``: a dict of example inputs is keyword inputs."""
    if store_of(folded) is not None:
        raise ExportError("export expects a folded model: call ssnfx.fold(shared) first")
    kwargs = dict(example_inputs) if isinstance(example_inputs, Mapping) else {}
    inputs = () if kwargs else tuple(example_inputs) \
        if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    folded.eval()
    try:
        with torch.no_grad():
            reference = folded(*inputs, **kwargs)
    except Exception as e:
        raise ExportError(f"the folded model fails on the example inputs, so nothing was "
                          f"exported: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    return inputs, kwargs, reference


def check_outputs(actual: Any, expected: Any, atol: float, rtol: float, what: str) -> None:
    """Raise ExportError unless two (nested) outputs agree."""
    try:
        torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)
    except AssertionError as e:
        raise ExportError(f"{what} does not reproduce the folded model: {e}") from e


def export(folded: nn.Module, example_inputs: Any, path: str | os.PathLike[str],
           format: str | None = None, atol: float = 1e-5, rtol: float = 1e-5,
           **options: Any) -> None:
    """Write ``folded`` to ``path`` in ``format``, checked against it on ``example_inputs``.

    Args:
        folded: a model from :func:`ssnfx.fold` (put in eval mode).
        example_inputs: one input, a tuple of inputs, or a dict of keyword inputs.
        path: the file; written only once the check passes.
        format: a name in :data:`EXPORT_FORMATS`; ``None`` picks the one whose suffix ``path``
            has.
        atol: absolute tolerance of the check.
        rtol: relative tolerance of the check.
        options: passed to the format's writer (``dynamic_shapes`` for ``pt2``).

    Example:
        >>> import os, tempfile, torch, ssnfx
        >>> folded = ssnfx.fold(ssnfx.share(torch.nn.Sequential(torch.nn.Linear(8, 4)), 0.9))
        >>> path = os.path.join(tempfile.mkdtemp(), "m.pt2")
        >>> ssnfx.export(folded, torch.randn(2, 8), path)  # the format from the suffix
        >>> torch.export.load(path).module()(torch.ones(2, 8)).shape
        torch.Size([2, 4])
    """
    fmt = _format(format, path)
    inputs, kwargs, reference = _prepare(folded, example_inputs)
    if kwargs:  # only then: a registered writer need not know keyword inputs
        options["kwargs"] = kwargs
    with atomic_path(path) as tmp:
        try:
            fmt.write(folded, inputs, str(tmp), **options)
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(f"{fmt.name} could not export {type(folded).__name__}: "
                              f"{type(e).__name__}: {e}{_hint(fmt, e)}") from e
        loaded = fmt.load(str(tmp))
        with torch.no_grad():
            check_outputs(loaded(*inputs, **kwargs), reference, atol, rtol,
                          f"the {fmt.name} export")


def _hint(fmt: ExportFormat, e: Exception) -> str:
    """What to try when a writer fails: for a way users meet (Hugging Face models), else the
    format's own hint."""
    if "cache_utils" in str(e):
        return ("; the model returns its key-value cache: pass use_cache=False among the "
                "example inputs")
    return f"; {fmt.hint}" if fmt.hint else ""


def _format(name: str | None, path: str | os.PathLike[str]) -> ExportFormat:
    if name is not None:
        try:
            return EXPORT_FORMATS.lookup(name)
        except ValueError as e:
            raise ExportError(str(e)) from None
    suffix = Path(path).suffix
    found = [f for f in EXPORT_FORMATS.values() if f.suffix == suffix]
    if not found:
        raise ExportError(f"no export format writes {suffix or 'files without a suffix'!r} "
                          f"files ({os.fspath(path)!r}); pass format= one of "
                          f"{sorted(EXPORT_FORMATS)}, or a path ending in one of "
                          f"{sorted(f.suffix for f in EXPORT_FORMATS.values())}")
    return found[0]


def _write_torchscript(folded: nn.Module, inputs: tuple[Any, ...], path: str,
                       kwargs: dict[str, Any] | None = None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(folded, inputs or None, check_trace=False, strict=False,
                                 example_kwarg_inputs=kwargs)
        torch.jit.save(traced, path)


def _load_torchscript(path: str) -> Callable[..., Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(path)


def _write_pt2(folded: nn.Module, inputs: tuple[Any, ...], path: str,
               dynamic_shapes: dict[str, Any] | Sequence[Any] | None = None,
               kwargs: dict[str, Any] | None = None) -> None:
    torch.export.save(torch.export.export(folded, inputs, kwargs,
                                          dynamic_shapes=dynamic_shapes), path)


#: TorchScript is deprecated in torch 2.14; its FutureWarnings are silenced because users asked
#: for the format. Prefer pt2 where torch.export applies.
register_export_format(ExportFormat(
    "torchscript", ".pt", _write_torchscript, _load_torchscript,
    hint="TorchScript (deprecated) traces fewer models than torch.export: use format='pt2'"))
register_export_format(ExportFormat("pt2", ".pt2", _write_pt2,
                                    lambda path: torch.export.load(path).module()))


def export_torchscript(folded: nn.Module, example_inputs: Any, path: str | os.PathLike[str],
                       atol: float = 1e-5, rtol: float = 1e-5) -> None:
    """:func:`export` to TorchScript (``torch.jit.trace``, ``.pt``).

    Example:
        >>> import os, tempfile, torch, ssnfx
        >>> from ssnfx.deploy import export_torchscript
        >>> folded = ssnfx.fold(ssnfx.share(torch.nn.Sequential(torch.nn.Linear(8, 4)), 0.9))
        >>> path = os.path.join(tempfile.mkdtemp(), "m.pt")
        >>> export_torchscript(folded, torch.randn(2, 8), path)
        >>> torch.jit.load(path)(torch.ones(1, 8)).shape
        torch.Size([1, 4])
    """
    export(folded, example_inputs, path, "torchscript", atol, rtol)


def export_pt2(folded: nn.Module, example_inputs: Any, path: str | os.PathLike[str],
               atol: float = 1e-5, rtol: float = 1e-5,
               dynamic_shapes: dict[str, Any] | Sequence[Any] | None = None) -> None:
    """:func:`export` with ``torch.export`` (``.pt2``).

    Example:
        >>> import os, tempfile, torch, ssnfx
        >>> from ssnfx.deploy import export_pt2
        >>> folded = ssnfx.fold(ssnfx.share(torch.nn.Sequential(torch.nn.Linear(8, 4)), 0.9))
        >>> path = os.path.join(tempfile.mkdtemp(), "m.pt2")
        >>> export_pt2(folded, torch.randn(2, 8), path)
        >>> torch.export.load(path).module()(torch.ones(2, 8)).shape
        torch.Size([2, 4])
    """
    export(folded, example_inputs, path, "pt2", atol, rtol, dynamic_shapes=dynamic_shapes)
