"""The ``ssnfx`` command line: compile, fold (export) and report.

Exit codes: 0 success; 2 usage errors (bad arguments, an impossible budget, missing files or
names, an output that exists without ``--force``); 1 failures
(a model that cannot be imported, traced, shared, folded or exported, or an output that cannot
be written: read-only, not a folder, disk full). Errors are one line on stderr.

Outputs are written under a temporary name and swapped in only when complete
(:func:`ssnfx._io.replace_dir`), under a lock taken when writing starts: an interrupted run
leaves the old output or the new one, never neither (a swap folder it left is put back on the
next run), and never touches its inputs.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import math
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import __version__
from ._io import claim_dir, dir_replacing, new_dir, recover_dir
from ._progress import stages
from .api import share
from .batches import call_model
from .checkpoint import load as load_checkpoint
from .checkpoint import read as read_checkpoint
from .checkpoint import save as save_checkpoint
from .config import COMBINERS, METHODS, ShareConfig
from .cpu_memory import retain_freed_memory
from .errors import BudgetError, PlanError, SsnfxError
from .export import EXPORT_FORMATS, export
from .grouping import STRATEGIES
from .passes import SearchConfig, fold
from .plan import SharingPlan
from .report import report

__all__ = ["main", "run", "load_model_file", "MODEL_NAMES"]

#: The checkpoint a compile folder holds: the plan and the weights.
CHECKPOINT = "shared.safetensors"
#: The folder ``fold`` writes a folded Hugging Face model to with its ``save_pretrained``.
PRETRAINED = "pretrained"
#: Names looked up in a model file when no ``:attr`` is given, in order.
MODEL_NAMES = ("model", "build_model", "get_model", "create_model", "Model")


class UsageError(Exception):
    """A mistake in how ssnfx was called: exit code 2."""


def load_model_file(spec: str) -> tuple[dict[str, Any], nn.Module]:
    """Import ``path.py[:attr]`` and return its namespace and the model it names.

    ``attr`` may name an ``nn.Module`` or a callable returning one; without it the first of
    :data:`MODEL_NAMES` that the file defines is used.
    """
    path_text, _, attr = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"model file not found: {path_text}")
    name = f"ssnfx_user_{path.stem}_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise UsageError(f"{path_text} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except SystemExit as e:  # a script run on import: nothing is loaded, so nothing is written
        raise SsnfxError(f"{path_text} exited while being imported (sys.exit({e.code!r})), so "
                         f"there is no model and nothing was written: put the script part "
                         f"under 'if __name__ == \"__main__\":'") from None
    except Exception as e:
        raise SsnfxError(f"{path_text} failed to import: {type(e).__name__}: {e}") from e
    ns = vars(module)
    if attr:
        if attr not in ns:
            raise UsageError(f"{path_text} has no attribute {attr!r}")
        candidates = [attr]
    else:
        candidates = [n for n in MODEL_NAMES if n in ns]
        if not candidates:
            raise UsageError(f"no model in {path_text}: define one of {', '.join(MODEL_NAMES)}, "
                             f"or name it as {path_text}:NAME")
    obj = ns[candidates[0]]
    if not isinstance(obj, nn.Module) and callable(obj):
        try:
            obj = obj()
        except SystemExit as e:
            raise SsnfxError(f"{path_text}:{candidates[0]}() exited (sys.exit({e.code!r})) "
                             f"instead of returning a model; nothing was written") from None
        except Exception as e:
            raise SsnfxError(f"{path_text}:{candidates[0]}() failed: {type(e).__name__}: {e}") \
                from e
    if not isinstance(obj, nn.Module):
        raise UsageError(f"{path_text}:{candidates[0]} is a {type(obj).__name__}, not an "
                         f"nn.Module or a function returning one")
    return ns, obj


def _budget(text: str) -> float | int:
    try:
        return int(text) if text.strip().isdigit() else float(text)
    except ValueError:
        raise UsageError(f"--budget must be a fraction like 0.1 or a parameter count like "
                         f"500000, got {text!r}") from None


def _example_inputs(ns: dict[str, Any], shape: str | None) -> tuple[Any, ...] | dict[str, Any]:
    """The example inputs: a tuple of positional inputs, or a dict of keyword inputs (as a
    Hugging Face model takes them)."""
    if shape:
        try:
            return (torch.randn(*[int(d) for d in shape.split(",")]),)
        except ValueError:
            raise UsageError(f"--input-shape must be comma-separated ints, got {shape!r}") \
                from None
    inputs = ns.get("example_inputs")
    if inputs is None:
        raise UsageError("the model file defines no example_inputs; pass --input-shape, e.g. "
                         "--input-shape 1,3,224,224")
    if callable(inputs):
        inputs = inputs()
    if isinstance(inputs, Mapping):
        return dict(inputs)
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _evaluate(args: argparse.Namespace, ns: dict[str, Any], shared: nn.Module) -> None:
    """The test metric: the file's ``metric_fn(model, test_loader)`` if it has one, else
    top-1 accuracy; a metric the outputs do not fit (a language model's) is a note, since the
    model is written already."""
    from .training import MetricError, accuracy

    loader, metric_fn = ns.get("test_loader"), ns.get("metric_fn")
    if loader is None:
        return
    if metric_fn is not None:
        _say(args, f"test metric_fn {metric_fn(shared, loader)}")
        return
    try:
        _say(args, f"test accuracy {accuracy(shared, loader):.4f}")
    except MetricError as e:
        _say(args, f"test accuracy skipped: {e}; define metric_fn(model, test_loader) in "
                   f"{args.model} for another metric")


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text)


def _check_output(out: Path, force: bool) -> None:
    """Refuse an output that is not a folder, or that exists without ``--force``; put back
    what an interrupted run left (with the lock held: see :func:`ssnfx._io.recover_dir`)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} is a file, not a folder: name a folder with -o")
    note = recover_dir(out)
    if note:
        print(f"ssnfx: {note}", file=sys.stderr)
    if out.exists() and any(out.iterdir()) and not force:
        raise UsageError(f"output {out} exists; pass --force to replace it")


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """An OSError while writing ``out`` names ``out``, not a temporary file inside it."""
    try:
        yield
    except OSError as e:
        if e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(out)) from None


def _config(args: argparse.Namespace) -> ShareConfig:
    if not args.config:
        return ShareConfig()
    try:
        return ShareConfig.from_json(Path(args.config).read_text())
    except FileNotFoundError:
        raise UsageError(f"--config {args.config}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--config {args.config} cannot be read: {e}") from None
    except PlanError as e:
        raise UsageError(f"--config {args.config}: {e}") from None


def cmd_compile(args: argparse.Namespace) -> int:
    budget = _budget(args.budget)
    out = Path(args.output or Path("out") / Path(args.model.split(":")[0]).stem)
    if out.parent.is_dir():  # fail before the work, not after it
        with _writing(out), claim_dir(out):
            _check_output(out, args.force)
            new_dir(out).rmdir()  # writable (not read-only, not full of inodes)
    config = _config(args)
    overrides = {k: getattr(args, k) for k in ("method", "combiner", "strategy", "groups")
                 if getattr(args, k) is not None}
    if args.no_auto_leaves:
        overrides["auto_leaves"] = False
    config = ShareConfig.from_dict({**config.to_dict(), **overrides})
    ns, model = load_model_file(args.model)
    start = time.perf_counter()
    loader, loss_fn = ns.get("train_loader"), ns.get("loss_fn")
    searching = loader is not None and loss_fn is not None and not args.no_search
    shared = share(model, budget, config, data=loader if searching else None,
                   loss_fn=loss_fn if searching else None,
                   search_config=SearchConfig(steps=args.search_steps, progress=not args.quiet))
    plan = shared.ssnfx.plan
    if searching:
        m = plan.measured
        _say(args, f"searched {m['steps']} steps ({m['epoch_fraction']} epoch) in "
                   f"{m['seconds']:.1f}s: {len(m['groups'])} group(s), "
                   f"{len(m['superweight_clusters'])} SuperWeight cluster(s)")
    _say(args, f"compiled in {time.perf_counter() - start:.2f}s")
    if args.epochs:
        if loader is None or loss_fn is None:
            raise UsageError(f"--epochs needs train_loader and loss_fn in {args.model}")
        from .training import train

        losses = train(shared, loader, loss_fn, epochs=args.epochs, lr=args.lr,
                       progress=not args.quiet)
        _say(args, f"trained {args.epochs} epoch(s): loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    # Claimed when writing starts, and checked again: a folder made at the output meanwhile,
    # or another compile to it, is an error without --force, never silently replaced.
    with _writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
    with _writing(out), claim_dir(out):
        _check_output(out, args.force)
        with dir_replacing(out) as tmp:
            save_checkpoint(shared, tmp / CHECKPOINT)  # the plan and the weights, in one place
            (tmp / "source.json").write_text(json.dumps(
                {"model": str(Path(args.model.split(":")[0]).resolve())
                 + (":" + args.model.split(":", 1)[1] if ":" in args.model else ""),
                 "ssnfx": __version__}, indent=1))
            (tmp / "report.txt").write_text(report(plan) + "\n")
    _say(args, report(plan))
    _say(args, f"wrote {out}/ ({CHECKPOINT}, report.txt; the plan: ssnfx report {out} "
               f"--json)")
    if args.epochs:  # after the write: a metric that fails loses no training
        _evaluate(args, ns, shared)
    return 0


def _recover(out: Path) -> None:
    """Put back an output folder that an interrupted compile left aside."""
    if out.parent.is_dir() and not out.exists():
        with claim_dir(out):
            note = recover_dir(out)
        if note:
            print(f"ssnfx: {note}", file=sys.stderr)


def _checkpoint_in(out: Path) -> Path | None:
    """The checkpoint of a compile folder: safetensors, or (folders written before) torch."""
    return next((p for p in (out / CHECKPOINT, out / "shared.pt") if p.is_file()), None)


def _compiled(directory: str) -> tuple[Path, dict[str, Any]]:
    out = Path(directory)
    _recover(out)
    if not (out / "source.json").is_file() or _checkpoint_in(out) is None:
        raise UsageError(f"{directory} is not an output of 'ssnfx compile' "
                         f"(no source.json and {CHECKPOINT})")
    return out, json.loads((out / "source.json").read_text())


def cmd_fold(args: argparse.Namespace) -> int:
    out, source = _compiled(args.directory)
    fmt = EXPORT_FORMATS[args.format]
    target = Path(args.output) if args.output else out / f"model{fmt.suffix}"
    pretrained = out / PRETRAINED
    for path in (target, pretrained):  # (the folder is written only for a Hugging Face model)
        if path.exists() and not args.force:
            raise UsageError(f"{path} exists; pass --force to replace it")
    with stages(3, "ssnfx fold", not args.quiet) as stage:
        with stage("load the model and checkpoint"):
            ns, model = load_model_file(source["model"])
            inputs = _example_inputs(ns, args.input_shape)
            shared = load_checkpoint(model, _checkpoint_in(out)).eval()
        with stage("fold"):
            folded = fold(shared)
            _check_inputs(folded, inputs)
        with stage(f"export to {args.format} and check"):
            export(folded, inputs, target, fmt.name, atol=args.atol, rtol=args.atol)
    _say(args, f"wrote {target} ({args.format}); it reproduces the folded model on the example "
               f"inputs within atol {args.atol:g}")
    if hasattr(folded, "save_pretrained"):  # a Hugging Face model: its own folder format too
        with _writing(pretrained), claim_dir(pretrained), dir_replacing(pretrained) as tmp:
            folded.save_pretrained(tmp)
        _say(args, f"wrote {pretrained}/ (save_pretrained: {type(folded).__name__}"
                   f".from_pretrained reads it)")
    return 0


def _check_inputs(model: nn.Module, inputs: tuple[Any, ...] | dict[str, Any]) -> None:
    """Run ``model`` once on the example inputs; a mismatch is one line, not torch.fx's
    traceback of the generated code (which it prints to stderr before re-raising)."""
    try:
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            call_model(model, inputs)
    except Exception as e:
        named = inputs.items() if isinstance(inputs, dict) else (("", x) for x in inputs)
        shapes = ", ".join((f"{k}=" if k else "")
                           + (str(tuple(x.shape)) if isinstance(x, torch.Tensor)
                              else type(x).__name__) for k, x in named)
        lines = str(e).strip().splitlines()
        raise UsageError(f"the example inputs ({shapes}) do not fit the model: "
                         f"{type(e).__name__}: {lines[0] if lines else ''}; check "
                         f"--input-shape or the file's example_inputs") from None


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.directory)
    _recover(out)
    source = (_checkpoint_in(out) or out / CHECKPOINT) if out.is_dir() else out
    if not source.is_file():
        raise UsageError(f"no plan at {source}: pass an output folder of 'ssnfx compile', a "
                         f"checkpoint or a plan's .json")
    # The plan lives in the checkpoint (read with weights_only); a .json is a plan alone.
    plan = SharingPlan.from_json(source.read_text()) if source.suffix == ".json" \
        else read_checkpoint(source)[0]
    if args.json:
        print(plan.to_json())
        return 0
    shared = None
    if out.is_dir() and (out / "source.json").is_file():
        # The trained model too: its coefficients give the layer-similarity section.
        _, model = load_model_file(json.loads((out / "source.json").read_text())["model"])
        shared = load_checkpoint(model, source)
        plan = shared.ssnfx.plan
    print(report(plan if shared is None else shared))
    if args.png:
        from .plot import coefficient_similarity, plot_sharing

        similarity, title = None, ""
        if "gradient_similarity" in plan.measured:  # what the search measured
            similarity = (plan.measured["slots"],
                          torch.tensor(plan.measured["gradient_similarity"]))
            title = "gradient similarity measured by the search"
        elif shared is not None:  # the layers' coefficient similarity (the poster's matrix)
            similarity = coefficient_similarity(shared)
            title = "|cos| of the layers' coefficients"
        plot_sharing(plan, args.png, similarity, title)
        _say(args, f"wrote {args.png}")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
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
    c.add_argument("--method", choices=sorted(METHODS), help="ssn (default) or swn")
    c.add_argument("--combiner", choices=sorted(COMBINERS), help="candidate combiner")
    c.add_argument("--strategy", choices=sorted(STRATEGIES), help="data-free grouping")
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
    c.set_defaults(func=cmd_compile)

    f = sub.add_parser("fold", parents=[quiet], help="fold and export a compiled model",
                       description="Fold the compiled model in DIR into plain weights and export "
                       "it, checking the export against the folded model on the file's "
                       "example_inputs (or --input-shape).")
    f.add_argument("directory", metavar="DIR", help="an output folder of 'ssnfx compile'")
    f.add_argument("--format", choices=sorted(EXPORT_FORMATS), default="pt2",
                   help="pt2 (torch.export, default), torchscript, or a registered format")
    f.add_argument("-o", "--output", help="the exported file (default DIR/model + the "
                   "format's suffix: .pt2, .pt)")
    f.add_argument("--input-shape", help="example input shape, e.g. 1,3,224,224")
    f.add_argument("--atol", type=_TOLERANCE, default=1e-5, help="tolerance of the check (1e-5)")
    f.add_argument("-f", "--force", action="store_true", help="replace an existing file")
    f.set_defaults(func=cmd_fold)

    r = sub.add_parser("report", parents=[quiet], help="print the sharing report",
                       description="Print the sharing table of a compiled model (DIR, a "
                       "checkpoint or a plan's .json), with --png draw it, or with --json print "
                       "its plan.")
    r.add_argument("directory", metavar="DIR",
                   help="an output folder of 'ssnfx compile', a checkpoint or a plan's .json")
    r.add_argument("--json", action="store_true", help="print the plan as JSON and nothing else")
    r.add_argument("--png", help="also write the sharing picture here (needs matplotlib)")
    r.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ssnfx`` console script and ``python -m ssnfx``."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
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
    retain_freed_memory()
    return main()


if __name__ == "__main__":
    sys.exit(run())
