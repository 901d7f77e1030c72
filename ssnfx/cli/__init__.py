"""The ``ssnfx`` command line: compile, fold (export) and report.

Exit codes: 0 success; 2 usage errors (bad arguments, an impossible budget, missing files or
names, an output that exists without ``--force``); 1 failures
(a model that cannot be imported, traced, shared, folded or exported, or an output that cannot
be written: read-only, not a folder, disk full). Errors are one line on stderr.

Outputs are written under a temporary name and swapped in only when complete
(:func:`ssnfx.core._io.replace_dir`), under a lock taken when writing starts: an interrupted run
leaves the old output or the new one, never neither (a swap folder it left is put back on the
next run), and never touches its inputs.

This package parses; :mod:`ssnfx.cli.commands` does the work. torch and the registries are imported
only after parsing, so that ``--help`` answers at once: the options that name a registered
method, combiner, strategy or export format are checked against their registry when given.
"""
from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable, Collection
from typing import Any

from ssnfx import __version__
from ssnfx.cli.usage import MODEL_NAMES, UsageError

__all__ = ["main", "run", "build_parser", "MODEL_NAMES", "UsageError"]

def _number(kind: type, least: float, strict: bool) -> Any:
    """An argparse type: a finite ``kind`` above ``least`` (at least, unless ``strict``)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < least or (strict and value == least):
            raise argparse.ArgumentTypeError(
                f"must be {'above' if strict else 'at least'} {least:g}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


_POSITIVE_INT = _number(int, 1, strict=False)
_COUNT = _number(int, 0, strict=False)
_POSITIVE = _number(float, 0, strict=True)
_TOLERANCE = _number(float, 0, strict=False)


#: The registries that options name, by kind: the module that holds each, and its name there.
_REGISTRIES = {
    "method": ("ssnfx.core.config", "METHODS"),
    "combiner": ("ssnfx.core.config", "COMBINERS"),
    "strategy": ("ssnfx.core.grouping", "STRATEGIES"),
    "format": ("ssnfx.deploy", "EXPORT_FORMATS"),
}


def registered_names(kind: str) -> Collection[str]:
    """The names a registry holds now (built-in and registered since): ``kind`` is one of
    ``method``, ``combiner``, ``strategy``, ``format``.

    Example:
        >>> from ssnfx.cli import registered_names
        >>> sorted(registered_names("method"))
        ['ssn', 'swn']
    """
    module, name = _REGISTRIES[kind]
    return getattr(importlib.import_module(module), name)


def _registered(kind: str) -> Callable[[str], str]:
    """An argparse type: a name in the ``kind`` registry, looked up when the option is given
    (argparse's ``choices`` would import the registry, and torch, to print ``--help``)."""
    def parse(text: str) -> str:
        names = registered_names(kind)
        if text not in names:
            raise argparse.ArgumentTypeError(
                f"invalid choice: {text!r} (choose from {', '.join(sorted(names))})")
        return text
    parse.__name__ = kind
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The ``ssnfx`` argument parser: building it and printing its help import no torch.

    Example:
        >>> from ssnfx.cli import build_parser
        >>> build_parser().parse_args(["report", "out", "-q"]).quiet
        True
    """
    parser = argparse.ArgumentParser(
        prog="ssnfx", description="Cross-layer parameter sharing for any PyTorch model.")
    parser.add_argument("--version", action="version", version=f"ssnfx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")

    c = sub.add_parser("compile", parents=[quiet], help="share a model's parameters",
                       description="Trace the model in FILE, share its parameters under the "
                       "budget (searching where to share when the file defines train_loader "
                       "and loss_fn), optionally train it briefly, and write shared.safetensors "
                       "(the plan and the weights) and report.txt. FILE is path.py or "
                       "path.py:NAME; without NAME the first "
                       f"of {', '.join(MODEL_NAMES)} is used (an nn.Module or a function "
                       "returning one). Training uses train_loader, loss_fn (and test_loader "
                       "for accuracy) from the same file.")
    c.add_argument("model", metavar="FILE[:NAME]", help="the model file")
    c.add_argument("-b", "--budget", default="0.1",
                   help="a fraction of the model's parameters (0.1) or a count (500000)")
    c.add_argument("-o", "--output", help="output folder (default out/<file stem>)")
    c.add_argument("--method", type=_registered("method"),
                   help="swn or ssn (default: SWN where the budget allows and the model has few "
                        "layer shapes, else SSN)")
    c.add_argument("--combiner", type=_registered("combiner"),
                   help="rr, avg, wavg, emb or linear (default: the method's own)")
    c.add_argument("--strategy", type=_registered("strategy"),
                   help="data-free grouping: auto (default: one group, depth bins where the "
                        "budget outgrows it), single, depth, shape or random")
    c.add_argument("--groups", type=_POSITIVE_INT,
                   help="number of groups (depth, random; learned groups: by silhouette if unset)")
    c.add_argument("--config", help="a ShareConfig JSON file; flags override it")
    c.add_argument("--no-auto-leaves", action="store_true",
                   help="fail on a module torch.fx cannot trace instead of making it a leaf")
    c.add_argument("--no-search", action="store_true",
                   help="use the data-free plan even when the file has train_loader and loss_fn")
    c.add_argument("--search-steps", type=_POSITIVE_INT,
                   help="search steps (default: SearchConfig.epochs, two epochs)")
    c.add_argument("--epochs", type=_COUNT, default=0, help="train this many epochs (default 0)")
    c.add_argument("--lr", type=_POSITIVE, default=1e-2, help="Adam learning rate (default 0.01)")
    c.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    c.set_defaults(func="compile")

    f = sub.add_parser("fold", parents=[quiet], help="fold and export a compiled model",
                       description="Fold the compiled model in DIR into plain weights and export "
                       "it, checking the export against the folded model on the file's "
                       "example_inputs (or --input-shape).")
    f.add_argument("directory", metavar="DIR", help="an output folder of 'ssnfx compile'")
    f.add_argument("--format", type=_registered("format"), default="pt2",
                   help="pt2 (torch.export, default), torchscript, or a registered format")
    f.add_argument("-o", "--output", help="the exported file (default DIR/model + the "
                   "format's suffix: .pt2, .pt)")
    f.add_argument("--input-shape", help="example input shape, e.g. 1,3,224,224")
    f.add_argument("--atol", type=_TOLERANCE, default=1e-5, help="tolerance of the check (1e-5)")
    f.add_argument("-f", "--force", action="store_true", help="replace an existing file")
    f.set_defaults(func="fold")

    r = sub.add_parser("report", help="print the sharing report",
                       description="Print the sharing table of a compiled model (DIR, a "
                       "checkpoint or a plan's .json), with --png draw it, or with --json print "
                       "its plan.")
    r.add_argument("directory", metavar="DIR",
                   help="an output folder of 'ssnfx compile', a checkpoint or a plan's .json")
    r.add_argument("-q", "--quiet", action="store_true",
                   help="print nothing but errors (and the plan --json asks for)")
    r.add_argument("--json", action="store_true", help="print the plan as JSON and nothing else")
    r.add_argument("--png", help="also write the sharing picture here (needs matplotlib)")
    r.set_defaults(func="report")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ssnfx`` console script and ``python -m ssnfx``."""
    args = build_parser().parse_args(argv)
    from ssnfx.core.errors import BudgetError, SsnfxError  # (light: no torch)

    try:
        from ssnfx.cli.commands import (
            COMMANDS,  # torch and the passes, once the arguments are known
        )

        return COMMANDS[args.func](args)
    except (UsageError, BudgetError) as e:  # an impossible budget is a bad argument
        print(f"ssnfx: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except SsnfxError as e:
        print(f"ssnfx: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except OSError as e:  # the machine, not the model: read-only, not a folder, disk full
        where = f": {e.filename}" if e.filename else ""
        print(f"ssnfx: {e.strerror or e}{where} (any previous output is unchanged)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ssnfx: interrupted; nothing was written", file=sys.stderr)
        return 130


def run() -> int:
    """The console script: :func:`main` in a process that keeps freed CPU memory for reuse
    (:func:`ssnfx.cpu_memory.retain_freed_memory`; the search trains, and a shared model's
    large tensors would otherwise be faulted in afresh at every step)."""
    from ssnfx.cpu_memory import retain_freed_memory  # (light: ctypes)

    retain_freed_memory()
    return main()


if __name__ == "__main__":
    sys.exit(run())
