"""Accuracy at equal parameters on a transformer: a byte-level decoder LM on real text.

ssnfx at 1%, 5% and 10% of ``ByteLM(128, 4)`` (875,520 parameters) against the small models a
user would otherwise train at the same parameter count: **reduced width** (4 blocks, the widest
model within the budget) and **reduced depth** (1 block, the widest within the budget), each
trained the same number of steps on the same batches; validation bits per byte on held-out files
(benchmarks/lm.py). Every finished run is appended to ``results/lm_runs.jsonl`` at once, so a
long background job can be tabulated (``--table``) while it runs, cells naming their seed count.

    python benchmarks/bench_lm.py --budgets 0.1 0.05 0.01 --seeds 3     # hours on one core
    python benchmarks/bench_lm.py --table                               # from the cache
    python benchmarks/bench_lm.py --quick                               # the tests' smoke run
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lm import ByteLM, bits_per_byte, corpus, lm_params, validation_windows, windows  # noqa: E402

import ssnfx  # noqa: E402
from ssnfx.training import refine_if_due  # noqa: E402

from common import RESULTS, publish  # noqa: E402

CACHE = RESULTS / "lm_runs.jsonl"
#: The variants, in table order: what each trains at the budget.
VARIANTS = {
    "full": "ByteLM(128, 4), unshared",
    "width": "reduced width: 4 blocks, the widest within the budget",
    "depth": "reduced depth: 1 block, the widest within the budget",
    "ssnfx": "SSN: ssnfx.share(model, budget, ShareConfig(method='ssn')), data-free (one group; "
             "ssnfx's default before SWN, hence the variant's name)",
    "swn": "SWN, ssnfx's default: ssnfx.share(model, budget, ShareConfig(method='swn')), "
           "data-free (soft sharing, the automatic tile; at 100% the auto grouping's 2 depth "
           "bins, where `{\"strategy\": \"single\"}` keeps one group)",
}


@dataclass(frozen=True)
class Run:
    variant: str
    budget: float = 1.0
    seed: int = 0
    steps: int = 2000
    batch: int = 16
    context: int = 128
    dim: int = 128
    depth: int = 4
    lr: float = 3e-3
    #: ShareConfig fields over the variant's own, as JSON (ssnfx variants; "" for none).
    config: str = ""
    #: Steps of ssnfx's search on the training text before training (0: data-free).
    search: int = 0

    @property
    def key(self) -> str:
        d = asdict(self)
        for name in ("config", "search"):  # (runs cached before they existed keep their keys)
            if not d[name]:
                del d[name]
        return json.dumps(d, sort_keys=True)


def widest(budget: int, depth: int, context: int) -> int:
    """The widest ``ByteLM(dim, depth)`` with at most ``budget`` parameters."""
    fits = [d for d in range(1, 1025) if lm_params(d, depth, context) <= budget]
    return max(fits) if fits else 1


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-byte cross-entropy."""
    return F.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1))


def build(run: Run, train: torch.Tensor | None = None) -> nn.Module:
    torch.manual_seed(run.seed)
    full = lm_params(run.dim, run.depth, run.context)
    target = math.floor(run.budget * full)
    if run.variant == "width":
        return ByteLM(widest(target, run.depth, run.context), run.depth, run.context)
    if run.variant == "depth":
        return ByteLM(widest(target, 1, run.context), 1, run.context)
    model = ByteLM(run.dim, run.depth, run.context)
    if run.variant == "full":
        return model
    method = {"ssnfx": "ssn", "swn": "swn"}[run.variant]
    overrides = json.loads(run.config) if run.config else {}
    # (from_dict: the runs' older keys name SWN's tile and hard_sharing as the fields they were)
    config = ssnfx.ShareConfig.from_dict({"method": method, **overrides})
    if not run.search:
        return ssnfx.share(model, run.budget, config)
    # The search's two epochs (SearchConfig's default) over run.search / 2 batches of its own.
    assert train is not None
    batches = windows(train, run.batch, run.context, seed=2000 + run.seed)
    data = [next(batches) for _ in range(max(1, run.search // 2))]
    return ssnfx.share(model, run.budget, config, data=data, loss_fn=loss_fn,
                       search_config=ssnfx.SearchConfig(progress=False))


def execute(run: Run, text: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """Train ``run`` (Adam, 100 warm-up steps, cosine to a tenth) and score it."""
    train, val = text
    model = build(run, train)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.Adam(model.parameters(), lr=run.lr)
    warm = min(100, run.steps // 10)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warm) / max(1, run.steps - warm)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    held_out = validation_windows(val, 256, run.context)
    curve = []
    start = time.process_time()
    batches = windows(train, run.batch, run.context, seed=1000 + run.seed)
    refine_batches = [next(windows(train, run.batch, run.context, seed=3000 + run.seed + i))
                      for i in range(10)]
    for step in range(run.steps):
        x, y = next(batches)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        # SWN's schedule where the plan has one (hard sharing, then refine).
        refine_if_due(model, refine_batches, loss_fn, step + 1, run.steps)
        if (step + 1) % max(1, run.steps // 8) == 0:
            curve.append([step + 1, round(bits_per_byte(model, held_out[:64]), 4)])
    return {"params": params, "bpb": round(bits_per_byte(model, held_out), 4), "curve": curve,
            "cpu_seconds": round(time.process_time() - start, 1)}


def load() -> dict[str, dict[str, Any]]:
    if not CACHE.exists():
        return {}
    out = {}
    for line in CACHE.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            out[record["key"]] = record["result"]
    return out


def runs_for(budgets: list[float], seeds: int, variants: list[str], steps: int,
             config: str = "", search: int = 0) -> list[Run]:
    """Seed by seed, so that a job cut short leaves every cell with as many seeds as it got."""
    out = []
    for seed in range(seeds):
        if "full" in variants:
            out.append(Run("full", 1.0, seed, steps))
        for budget in budgets:
            out += [Run(v, budget, seed, steps,
                        config=config if v in ("ssnfx", "swn") else "",
                        search=search if v in ("ssnfx", "swn") else 0)
                    for v in variants if v != "full"]
    return out


def table(results: dict[str, dict[str, Any]], budgets: list[float], steps: int) -> str:
    """One row per variant, ShareConfig overrides and search length found in ``results`` (the
    reduced models and the full one first), one column per budget."""
    rows: dict[tuple[str, str, int], dict[float, list[dict[str, Any]]]] = {}
    for key, value in results.items():
        run = Run(**json.loads(key))
        if run.steps == steps and (run.variant == "full" or run.budget in budgets):
            rows.setdefault((run.variant, run.config, run.search), {}).setdefault(
                run.budget, []).append(value)
    order = list(VARIANTS)

    def cell(values: list[dict[str, Any]] | None) -> str:
        if not values:
            return "-"
        bpb = [v["bpb"] for v in values]
        spread = f" ± {statistics.stdev(bpb):.3f}" if len(bpb) > 1 else ""
        return f"{statistics.mean(bpb):.3f}{spread} ({len(bpb)}; {values[0]['params']:,})"

    def label(variant: str, config: str, search: int) -> str:
        extra = [config] if config else []
        extra += [f"search {search} steps"] if search else []
        return variant + (f" `{' '.join(extra)}`" if extra else "")

    lines = ["| variant | " + " | ".join(f"{b:.0%}" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for (variant, config, search), by_budget in sorted(
            rows.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1], kv[0][2])):
        if variant == "full":
            lines.append(f"| full (100%) | {cell(by_budget.get(1.0))} |"
                         + " |" * (len(budgets) - 1))
            continue
        lines.append(f"| {label(variant, config, search)} | "
                     + " | ".join(cell(by_budget.get(b)) for b in budgets) + " |")
    return "\n".join(lines)


def tables(results: dict[str, dict[str, Any]], budgets: list[float]) -> str:
    """One :func:`table` per training length in ``results`` (the shortest first), and the
    legend."""
    lengths = sorted({Run(**json.loads(key)).steps for key in results})
    legend = "\n".join(f"- **{k}**: {text}" for k, text in VARIANTS.items())
    return ("Validation bits per byte (lower is better), mean ± std over seeds; in brackets the "
            "number of seeds and the trainable parameters. A ShareConfig override in code font "
            "(`tile: 0`: SWN's own cuts, the runs before the automatic tile).\n\n"
            + "\n\n".join(f"### {steps:,} training steps\n\n{table(results, budgets, steps)}"
                           for steps in lengths)
            + "\n\n" + legend)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budgets", type=float, nargs="+", default=[0.1, 0.05, 0.01])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--table", action="store_true", help="tabulate the cache only")
    p.add_argument("--quick", action="store_true", help="a few steps, nothing cached")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--search", type=int, default=0,
                   help="search steps before training the ssnfx variants (0: data-free)")
    p.add_argument("--config", default="", help="ShareConfig fields as JSON, for the ssnfx "
                   "variants (e.g. '{\"tile\": 64}')")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        text = corpus(limit=1 << 18)
        quick = {run.key: execute(run, text)
                 for run in runs_for([0.1], 1, args.variants, steps=4, config=args.config)}
        return publish("lm", "", tables(quick, [0.1]), "", quick=True)
    results = load()
    if not args.table:
        text = corpus()
        for run in runs_for(args.budgets, args.seeds, args.variants, args.steps, args.config,
                            args.search):
            if run.key in results:
                continue
            result = execute(run, text)
            results[run.key] = result
            with CACHE.open("a") as f:
                f.write(json.dumps({"key": run.key, "result": result}) + "\n")
            print(f"{run.variant} {run.config} search {run.search} {run.budget:.0%} "
                  f"seed {run.seed}: "
                  f"{result['bpb']:.4f} bpb, "
                  f"{result['params']:,} parameters, {result['cpu_seconds']} s", flush=True)
    body = tables(results, sorted(args.budgets, reverse=True))
    return publish("lm", "Byte-level transformer LM: accuracy at equal parameters", body,
                   "python benchmarks/bench_lm.py")


if __name__ == "__main__":
    main()
