"""One Fashion-MNIST training run, described by a :class:`Run`, and a cache of finished runs.

Every accuracy benchmark on Fashion-MNIST (bench_accuracy.py, bench_search.py) describes what it
needs as ``Run`` records; :func:`run_all` trains the ones not yet in ``results/runs.jsonl``, in
parallel processes, and appends each result as it finishes. So the scripts share runs (the single
group at 10% is trained once for both), an interrupted benchmark resumes where it stopped, and
every figure in RESULTS.md can be traced to the run that produced it.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import math
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

import ssnfx
from ssnfx.data import fashion_mnist
from ssnfx.ensemble import Members, ensemble_loss
from ssnfx.training import accuracy, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SAMPLE  # noqa: E402
from networks import PatchTransformer, ResNetFM  # noqa: E402

CACHE = RESULTS / "runs.jsonl"


@dataclass(frozen=True)
class Run:
    """A training run: the full model, a reduced-width baseline, or ssnfx at a budget.

    ``strategy="search"`` learns the groups from the training data (``groups=None``: their
    number by silhouette score); the other strategies are data-free.
    """

    variant: str                 # "full", "reduced" or "ssnfx"
    budget: float = 1.0
    method: str = "ssn"
    combiner: str | None = None
    strategy: str = "single"
    groups: int | None = None
    seed: int = 0
    width: int = 16
    epochs: int = 3
    limit: int | None = None     # training images (None: all 60,000)
    lr: float = 3e-3
    batch: int = 128
    # Added later: a key leaves them out at their defaults, so cached runs keep their keys.
    split: str = "largest-first"
    hard: bool = False               # SWN hard sharing
    statistic: str | None = None     # SearchConfig.statistic (None: its default)
    search_steps: int | None = None  # SearchConfig.steps (None: its default)
    refine_after: int | None = None  # epochs of training before ssnfx.refine (SWN Sec. 2.2.2)
    beta: float = 0.9                # refine's threshold
    wider: int = 0                   # reduced baseline: this many channels above the widest fit
    members: bool = False            # ResNetFM(width) and a PatchTransformer as one ensemble
    tile: int | None = None          # SWN's tile option (the longest SuperWeight side)
    guard: bool = False              # SearchConfig.guard
    silhouette: bool = False         # SearchConfig.silhouette
    refine_at: float | None = None   # ShareConfig.refine_at: train() refines hard sharing then

    @property
    def key(self) -> str:
        d = asdict(self)
        defaults = {f.name: f.default for f in fields(self)}
        for name in _ADDED:
            if d[name] == defaults[name]:
                del d[name]
        if self.strategy == "search":  # runs of the search before SSN Sec. 3.2 stay apart
            d["search_version"] = SEARCH_VERSION
        return json.dumps(d, sort_keys=True)


#: The fields added after runs were cached: keys leave them out at their defaults.
_ADDED = ("split", "hard", "statistic", "search_steps", "refine_after", "beta", "wider",
          "members", "tile", "guard", "silhouette", "refine_at")
#: The search's version in the keys of search runs: 2 is SSN Sec. 3.2's provisional model and
#: SWN's Eq. 2 by default (issue 21); the cache's older search runs have no such key.
SEARCH_VERSION = 2
#: The members of a ``members`` run, in output order.
MEMBERS = ("cnn", "vit")


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def reduced_width(make: Callable[[int], nn.Module], budget: int, widest: int) -> int:
    """The widest ``make(width)`` with at most ``budget`` parameters: the papers' reduced
    baseline (SSN Table 1), or 1 if even that is over."""
    fits = [w for w in range(1, widest + 1) if params(make(w)) <= budget]
    return max(fits) if fits else 1


def execute(run: Run, threads: int = 1, data: Path | None = None) -> dict[str, Any]:
    """Train and test one run on the Fashion-MNIST at ``data`` (None: the default, see
    :func:`ssnfx.data.fashion_mnist_source`); returns its figures, or ``{"error": ...}`` for a
    configuration ssnfx refuses (a budget below what the model can be shared with), which the
    tables show. Times are the process's CPU seconds (one thread per run), so that runs sharing
    the machine do not inflate each other's figures."""
    try:
        return _execute(run, threads, data)
    except ssnfx.BudgetError as e:
        return {"error": str(e)}


def _plain(run: Run, out: dict[str, Any]) -> nn.Module:
    """The unshared network of ``run``: ResNetFM(width), or with ``members`` the ensemble of
    ResNetFM(width) and a PatchTransformer; the "reduced" variant at the budget's parameters
    (each member scaled to its own share; widths recorded in ``out``)."""
    nets: dict[str, tuple[Callable[[int], nn.Module], int]] = {MEMBERS[0]: (ResNetFM, run.width)}
    if run.members:  # dims in steps of the 4 heads
        nets[MEMBERS[1]] = (lambda step: PatchTransformer(4 * step), 16)
    models = {}
    for name, (make, size) in nets.items():
        if run.variant == "reduced":
            size = reduced_width(make, int(run.budget * params(make(size))), size) + run.wider
            out.setdefault("reduced_width", []).append(size)
        models[name] = make(size)
    if "reduced_width" in out and not run.members:
        out["reduced_width"] = out["reduced_width"][0]
    return Members(models) if run.members else models[MEMBERS[0]]


def _execute(run: Run, threads: int, data: Path | None) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.manual_seed(run.seed)
    train_loader, test_loader = fashion_mnist(batch_size=run.batch, seed=run.seed,
                                              limit=run.limit, root=data)
    loss_fn = ensemble_loss(F.cross_entropy) if run.members else F.cross_entropy
    original = params(_plain(replace(run, variant="full"), {}))
    out: dict[str, Any] = {"original": original}
    start = time.process_time()
    if run.variant in ("full", "reduced"):
        model = _plain(run, out)
    else:
        source = _plain(replace(run, variant="full"), {})
        config = ssnfx.ShareConfig(method=run.method, combiner=run.combiner, seed=run.seed,
                                   strategy="single" if run.strategy == "search"
                                   else run.strategy, groups=run.groups, split=run.split,
                                   refine_at=run.refine_at,
                                   options={"hard_sharing": run.hard, "tile": run.tile}
                                   if run.method == "swn" else {})
        if run.strategy == "search":
            search = ssnfx.SearchConfig(progress=False, steps=run.search_steps,
                                        statistic=run.statistic, guard=run.guard,
                                        silhouette=run.silhouette)
            model = ssnfx.share(source, run.budget, config, data=train_loader, loss_fn=loss_fn,
                                search_config=search)
            out["search_steps"] = model.ssnfx.plan.measured["steps"]
        else:
            model = ssnfx.share(source, run.budget, config)
        out["groups"] = len(model.ssnfx.plan.groups)
    out["setup_s"] = time.process_time() - start
    out["params"] = params(model)

    def refine(epoch: int) -> None:
        # SWN Sec. 2.2.2: after E epochs of hard sharing, untie the rows whose uses diverge.
        if epoch + 1 == run.refine_after:
            result = ssnfx.refine(model, train_loader, loss_fn, steps=20, beta=run.beta)
            out["untied_rows"] = len(result.untied)

    start = time.process_time()
    losses = train(model, train_loader, loss_fn, epochs=run.epochs, lr=run.lr,
                   progress=False, on_epoch=refine if run.refine_after else None)
    out["train_s"] = time.process_time() - start
    out["loss"] = losses[-1]
    if run.members:  # each member alone, and the ensemble (the mean of their softmax)
        logits = _logits(model, test_loader)
        labels = torch.cat([y for _, y in test_loader])
        out["member_accuracy"] = {n: float((v.argmax(1) == labels).float().mean())
                                  for n, v in logits.items()}
        mean = torch.stack([v.softmax(1) for v in logits.values()]).mean(0)
        out["accuracy"] = float((mean.argmax(1) == labels).float().mean())
        return out
    out["accuracy"] = accuracy(model, test_loader)
    if run.variant == "ssnfx":  # what deploys: the folded model must predict the same
        out["folded_accuracy"] = accuracy(ssnfx.fold(model.eval()), test_loader)
    return out


@torch.no_grad()
def _logits(model: nn.Module, loader: Iterable[Any]) -> dict[str, torch.Tensor]:
    """Test logits of each member of an ensemble model (outputs in ``Members`` order)."""
    model.eval()
    outputs = [model(x) for x, _ in loader]
    return {n: torch.cat([o[i] for o in outputs]) for i, n in enumerate(MEMBERS)}


def _load() -> dict[str, dict[str, Any]]:
    if not CACHE.exists():
        return {}
    rows = (json.loads(line) for line in CACHE.read_text().splitlines() if line.strip())
    return {r["key"]: r["result"] for r in rows}


def run_all(runs: Iterable[Run], jobs: int = 1, threads: int = 1, cache: bool = True,
            train: bool = True, data: Path | None = None) -> dict[Run, dict[str, Any]]:
    """Results of ``runs``: from the cache where present, else trained on the Fashion-MNIST at
    ``data`` (``jobs`` at a time, each on ``threads`` threads) and appended to the cache as they
    finish; with ``train`` False, only what the cache holds. The cache's keys do not name the
    data: cache only runs on the full set."""
    runs = list(dict.fromkeys(runs))
    cache = cache and data != SAMPLE  # the sample's figures are no result to keep
    done = _load() if cache else {}
    results = {r: done[r.key] for r in runs if r.key in done}
    if not train:
        return results
    # Seed by seed, so that a stopped run leaves whole tables for the first seeds; within a
    # seed, data-free runs first: they are the cheaper ones, and the baselines of the rest.
    todo = sorted((r for r in runs if r not in results),
                  key=lambda r: (r.seed, r.strategy == "search"))
    print(f"{len(results)} of {len(runs)} runs cached; training {len(todo)}", flush=True)

    def finish(run: Run, result: dict[str, Any]) -> None:
        results[run] = result
        if cache:
            with CACHE.open("a") as f:
                f.write(json.dumps({"key": run.key, "result": result}) + "\n")
        figures = f"{result['accuracy']:.4f} in {result['train_s']:.0f}s" \
            if "error" not in result else f"refused: {result['error'][:80]}"
        print(f"[{len(results)}/{len(runs)}] {run.variant} {run.method}/{run.combiner} "
              f"{run.strategy} budget {run.budget:g} seed {run.seed}: {figures}", flush=True)

    if jobs <= 1:
        for run in todo:
            finish(run, execute(run, threads, data))
    else:
        context = multiprocessing.get_context("spawn")
        pool = cf.ProcessPoolExecutor(jobs, mp_context=context)
        try:
            futures = {pool.submit(execute, run, threads, data): run for run in todo}
            for future in cf.as_completed(futures):
                finish(futures[future], future.result())
        finally:
            # On an error, drop the queued runs at once instead of training them for nothing.
            pool.shutdown(wait=False, cancel_futures=True)
    return results


def interpolated(results: dict[Run, dict[str, Any]], below: list[Run], above: list[Run],
                 params: float) -> list[float]:
    """The reduced baseline at exactly ``params`` parameters, seed by seed (for the seeds both
    have): the accuracy interpolated linearly in log-parameters between the widest
    whole-channel network within the budget (the runs ``below``) and the next width
    (``above``)."""
    wider = {r.seed: results[r] for r in above}
    out = []
    for run in below:
        if run.seed in wider:
            lo, hi = results[run], wider[run.seed]
            low, high = math.log(lo["params"]), math.log(hi["params"])
            t = (math.log(params) - low) / (high - low)
            out.append(lo["accuracy"] + t * (hi["accuracy"] - lo["accuracy"]))
    return out


def seeds_of(run: Run, seeds: int) -> list[Run]:
    return [replace(run, seed=s) for s in range(seeds)]


def completed(results: dict[Run, dict[str, Any]], full: list[Run],
              table: dict[Any, list[Run]]) -> tuple[list[Run], dict[Any, list[Run]]]:
    """``full`` and ``table`` cut to the runs that have results (all of them, unless
    :func:`run_all` was told not to train): a cell holds the seeds that ran, and a cell with
    none is left out."""
    return ([r for r in full if r in results],
            {k: [r for r in rs if r in results] for k, rs in table.items()
             if any(r in results for r in rs)})


def seed_note(runs: list[Run], seeds: int) -> str:
    """Nothing when a cell has every seed, else how many it has: `` (1 seed)``."""
    return "" if len(runs) == seeds else f" ({len(runs)} seed{'s' * (len(runs) > 1)})"


def refusal(result: dict[str, Any]) -> str:
    """A refused run's table cell: the least budget the error names."""
    least = result["error"].split("shared with: ")[-1].split(" (")[0]
    return f"refused: the least budget is {least} parameters"
