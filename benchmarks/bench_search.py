"""Learned sharing against the data-free strategies on Fashion-MNIST (Debian's
dataset-fashion-mnist, or $SSNFX_FASHION_MNIST), with a ResNet-style network, at budgets of 1%, 5%
and 10%; plus what the search costs.

    python benchmarks/bench_search.py [--quick] [--jobs 2] [--epochs 3] [--seeds 2] [--limit 20000]
        [--cached] [--table groups]

``--table groups`` is the SSN Table 2 analogue instead: at budgets 100% and 10%, with a fixed
number of groups K in {2, 4}, learned groups (the search) against random, depth and shape
groupings, and one group (results/search_groups.md).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace

import torch.nn.functional as F

import ssnfx
from ssnfx.data import fashion_mnist
from ssnfx.passes.search import provisional_model

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import data_note, fashion_data, mean_std, write  # noqa: E402
from fmnist import Run, completed, refusal, run_all, seed_note, seeds_of  # noqa: E402
from networks import ResNetFM  # noqa: E402

#: label -> the run (budget and seed are filled in): learned groups against the data-free ones.
STRATEGIES = {
    "learned (search)": Run("ssnfx", combiner="wavg", strategy="search"),
    "learned, 3 groups": Run("ssnfx", combiner="wavg", strategy="search", groups=3),
    "single": Run("ssnfx", combiner="wavg"),
    "shape": Run("ssnfx", combiner="wavg", strategy="shape"),
    "random (3 groups)": Run("ssnfx", combiner="wavg", strategy="random"),
}


def groups_table(ks: list[int]) -> dict[str, Run]:
    """The SSN Table 2 analogue's rows: one group, shape groups, and for each K learned, random
    and depth groupings (WAvg, SSN's default combiner)."""
    rows = {"single": Run("ssnfx", combiner="wavg"),
            "shape": Run("ssnfx", combiner="wavg", strategy="shape")}
    for k in ks:
        for label, strategy in (("learned", "search"), ("random", "random"), ("depth", "depth")):
            rows[f"{label}, K={k}"] = Run("ssnfx", combiner="wavg", strategy=strategy, groups=k)
    return rows


def step_time_ratio(width: int, loader, repeats: int = 15) -> float:
    """Median step time of the provisional search model over the unshared one (interleaved)."""
    x, y = next(iter(loader))
    plain = ResNetFM(width)
    provisional = provisional_model(ssnfx.trace(ResNetFM(width)), 0.1, ssnfx.ShareConfig(),
                                    ssnfx.SearchConfig())
    times: dict[str, list[float]] = {"plain": [], "provisional": []}
    for _ in range(repeats):
        for name, model in (("plain", plain), ("provisional", provisional)):
            start = time.perf_counter()
            F.cross_entropy(model(x), y).backward()
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["provisional"]) / statistics.median(times["plain"])


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny run for the tests")
    parser.add_argument("--limit", type=int, default=20000, help="training images (0: all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--cached", action="store_true",
                        help="train nothing: tabulate the runs the cache holds")
    parser.add_argument("--table", choices=("strategies", "groups"), default="strategies",
                        help="groups: the SSN Table 2 analogue (fixed K, budgets 100%% and 10%%)")
    args = parser.parse_args(argv)
    args.limit = args.limit or None
    budgets, strategies = [0.01, 0.05, 0.1], STRATEGIES
    if args.table == "groups":
        budgets, strategies = [1.0, 0.1], groups_table([2, 4])
    if args.quick:
        args.limit, args.epochs, args.seeds, args.width = 600, 1, 1, 8
        budgets, strategies = [0.1], dict(list(strategies.items())[::2])
    common = dict(width=args.width, epochs=args.epochs, limit=args.limit)
    full = seeds_of(Run("full", **common), args.seeds)
    table = {(label, b): seeds_of(replace(run, budget=b, **common), args.seeds)
             for b in budgets for label, run in strategies.items()}
    data = fashion_data(args.quick)
    results = run_all([*full, *(r for rs in table.values() for r in rs)], args.jobs,
                      args.threads, cache=not args.quick, train=not args.cached, data=data)
    full, table = completed(results, full, table)
    rows = ["| budget | strategy | groups | test accuracy % | setup s | train s |",
            "|---|---|---:|---:|---:|---:|"]
    fractions = []
    for (label, budget), runs in table.items():
        res = [results[r] for r in runs]
        if "error" in res[0]:
            rows.append(f"| {budget:.0%} | {label} | - | {refusal(res[0])} | - | - |")
            continue
        if runs[0].strategy == "search":
            fractions += [r["setup_s"] / r["train_s"] for r in res]
        groups = "/".join(str(g) for g in sorted({r["groups"] for r in res}))
        rows.append(f"| {budget:.0%} | {label} | {groups} | "
                    f"{mean_std([r['accuracy'] for r in res])}{seed_note(runs, args.seeds)} | "
                    f"{statistics.mean(r['setup_s'] for r in res):.1f} | "
                    f"{statistics.mean(r['train_s'] for r in res):.0f} |")
    train_loader, _ = fashion_mnist(batch_size=128, limit=args.limit, root=data)
    ratio = step_time_ratio(args.width, train_loader)
    original = results[full[0]]["original"]
    body = "\n".join([
        f"ResNetFM(width={args.width}), {original:,} parameters; full model "
        f"{mean_std([results[r]['accuracy'] for r in full])}% test accuracy.", "", *rows, "",
        f"{args.seeds} seed(s), {args.epochs} epoch(s) of Adam (lr 3e-3, cosine), batch 128, "
        f"{'all 60,000' if args.limit is None else f'{args.limit:,}'} training images. 'groups' "
        f"lists the group counts the seeds gave. 'setup s' is trace + search + rewrite "
        f"(data-free rows: trace + plan + rewrite).", "",
        f"Search cost: {statistics.mean(fractions or [0]):.1%} of the training time (default "
        f"steps: a fifth of an epoch's batches, 20 to 200). Step time of the provisional search "
        f"model over the unshared model (batch 128, forward + backward, median of interleaved "
        f"runs): {ratio:.2f}x.", "", data_note(data)])
    if not args.quick and args.table == "groups":
        write("search_groups", "Parameter groups at a fixed K (SSN Table 2 analogue): "
              "Fashion-MNIST", body, f"python benchmarks/bench_search.py --table groups "
              f"--width {args.width} --epochs {args.epochs} --limit {args.limit or 0} "
              f"--seeds {args.seeds} --jobs {args.jobs}")
    elif not args.quick:
        write("search", "Learned sharing vs data-free strategies: Fashion-MNIST", body,
              "python benchmarks/bench_search.py --jobs 2")
    print(body)
    return body


if __name__ == "__main__":
    main()
