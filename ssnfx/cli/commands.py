"""What the ``ssnfx`` commands do: compile, fold (export) and report.

The parser and the entry point are :mod:`ssnfx.cli`, which imports this module (and so torch)
only once the arguments are parsed, so that ``ssnfx --help`` answers at once. Exit codes and
how outputs are written: see :mod:`ssnfx.cli`.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ssnfx import __version__
from ssnfx.api import share
from ssnfx.checkpoint import load as load_checkpoint
from ssnfx.checkpoint import read as read_checkpoint
from ssnfx.checkpoint import save as save_checkpoint
from ssnfx.cli.usage import MODEL_NAMES, UsageError
from ssnfx.core._io import claim_dir, dir_replacing, new_dir, recover_dir
from ssnfx.core._progress import stages
from ssnfx.core.batches import call_model
from ssnfx.core.config import ShareConfig
from ssnfx.core.errors import PlanError, SsnfxError
from ssnfx.core.methods import get_method
from ssnfx.core.plan import SharingPlan
from ssnfx.deploy import EXPORT_FORMATS, export
from ssnfx.passes import SearchConfig, fold
from ssnfx.reporting import report

__all__ = ["COMMANDS", "load_model_file", "cmd_compile", "cmd_fold", "cmd_report"]

#: The checkpoint a compile folder holds: the plan and the weights.
CHECKPOINT = "shared.safetensors"
#: The folder ``fold`` writes a folded Hugging Face model to with its ``save_pretrained``.
PRETRAINED = "pretrained"


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
    from ssnfx.training import MetricError, accuracy

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
    what an interrupted run left (with the lock held: see :func:`ssnfx.core._io.recover_dir`)."""
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
    """``ssnfx compile``: share the file's model under the budget (searching where it has data),
    train it for ``--epochs``, and write the checkpoint, the report and the source."""
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
        # What the plan shares by: SSN's parameter groups or SWN's SuperWeight clusters.
        found = {"groups": "parameter group(s)", "clusters": "SuperWeight cluster(s)"}[
            get_method(plan.method).shares_by]
        _say(args, f"searched {m['steps']} steps ({m['epoch_fraction']} epoch) in "
                   f"{m['seconds']:.1f}s: {len(plan.groups)} {found}")
    _say(args, f"compiled in {time.perf_counter() - start:.2f}s")
    if args.epochs:
        if loader is None or loss_fn is None:
            raise UsageError(f"--epochs needs train_loader and loss_fn in {args.model}")
        from ssnfx.training import train

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
    """``ssnfx fold``: load a compile folder, fold it, export it and check the export (and a
    Hugging Face model's ``save_pretrained`` folder)."""
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
    """``ssnfx report``: print the sharing report of a compile folder, a checkpoint or a plan,
    draw it (``--png``) or print the plan (``--json``)."""
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
    if args.quiet and not args.png:
        return 0  # nothing to print or draw: the plan was read, so a broken file still fails
    shared = None
    if out.is_dir() and (out / "source.json").is_file():
        # The trained model too: its coefficients give the layer-similarity section.
        _, model = load_model_file(json.loads((out / "source.json").read_text())["model"])
        shared = load_checkpoint(model, source)
        plan = shared.ssnfx.plan
    _say(args, report(plan if shared is None else shared))
    if args.png:
        from ssnfx.plot import plot_sharing

        # With the similarity the search measured, else the trained layers' coefficients.
        plot_sharing(plan if shared is None else shared, args.png)
        _say(args, f"wrote {args.png}")
    return 0


#: Each command's function, by the name the parser gives it.
COMMANDS = {"compile": cmd_compile, "fold": cmd_fold, "report": cmd_report}
