"""Learned sharing against the data-free strategies on Fashion-MNIST (Debian's
dataset-fashion-mnist, or $SSNFX_FASHION_MNIST), with a ResNet-style network, at budgets of 1%, 5%
and 10%; plus what the search costs.

    python benchmarks/bench_search.py [--quick] [--jobs 2] [--epochs 3] [--seeds 2] [--limit 20000]
        [--cached] [--table {strategies,groups,swn,settings}]

``--table groups`` is the SSN Table 2 analogue instead: at budgets 100% and 10%, with a fixed
number of groups K in {2, 4}, learned groups (the search) against random, depth and shape
groupings, and one group (results/search_groups.md). ``--table swn`` is the SWN ablation
(results/search_swn.md) and ``--table settings`` SSN's settings against each other and the
reduced baseline at equal parameters (results/search_settings.md), ``--table families`` one store
for a CNN and a small transformer (results/search_families.md).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch.nn.functional as F

import ssnfx
from ssnfx.data import fashion_mnist
from ssnfx.passes.provisional import provisional_model

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import data_note, fashion_data, mean_std, write  # noqa: E402
from fmnist import Run, completed, interpolated, refusal, run_all, seed_note, seeds_of  # noqa: E402
from networks import ResNetFM  # noqa: E402

#: label -> the run (budget and seed are filled in): learned groups against the data-free ones.
STRATEGIES = {
    "learned (search)": Run("ssnfx", combiner="wavg", strategy="search"),
    "learned, 3 groups": Run("ssnfx", combiner="wavg", strategy="search", groups=3),
    "single": Run("ssnfx", combiner="wavg"),
    "shape": Run("ssnfx", combiner="wavg", strategy="shape"),
    "random (3 groups)": Run("ssnfx", combiner="wavg", strategy="random"),
}

#: A table: (label, budget) -> the run (the seed is filled in).
Table = dict[tuple[str, float], Run]


def strategies_table() -> Table:
    return {(label, b): replace(run, budget=b)
            for b in (0.01, 0.05, 0.1) for label, run in STRATEGIES.items()}


def groups_table(ks: tuple[int, ...] = (2, 4)) -> Table:
    """The SSN Table 2 analogue's rows at 100% and 10%: one group, shape groups, and for each K
    learned, random and depth groupings (WAvg, the SSN paper's combiner)."""
    rows = {"single": Run("ssnfx", combiner="wavg"),
            "shape": Run("ssnfx", combiner="wavg", strategy="shape")}
    for k in ks:
        for label, strategy in (("learned", "search"), ("random", "random"), ("depth", "depth")):
            rows[f"{label}, K={k}"] = Run("ssnfx", combiner="wavg", strategy=strategy, groups=k)
    return {(label, b): replace(run, budget=b)
            for b in (1.0, 0.1) for label, run in rows.items()}


def swn_table() -> Table:
    """The SWN ablation (SWN Table 1(b)): one cluster against learned clusters (by the
    coefficient statistic and by Eq. 2), soft against hard sharing, and hard sharing refined
    after the first epoch at beta 0, 0.5 and 0.9, at 1% and 10%; at 50%, where several clusters
    can each hold their largest SuperWeight, the clusterings alone."""
    swn = Run("ssnfx", method="swn")
    learned = replace(swn, strategy="search", statistic="superweights")
    rows = {"one cluster, soft": swn,
            "learned (coefficients), soft": replace(learned, statistic="coefficients"),
            "learned (Eq. 2), soft": learned,
            "one cluster, hard": replace(swn, hard=True),
            "learned (Eq. 2), hard": replace(learned, hard=True)}
    for beta in (0.0, 0.5, 0.9):
        rows[f"learned (Eq. 2), hard, refine beta={beta:g}"] = replace(
            learned, hard=True, refine_after=1, beta=beta)
    table = {(label, b): replace(run, budget=b) for b in (0.01, 0.1) for label, run in rows.items()}
    for label in list(rows)[:3]:
        table[(label, 0.5)] = replace(rows[label], budget=0.5)
    return table


def settings_table(epoch_steps: int) -> Table:
    """SSN's settings at 1% and 10%: WAvg's softmax against the reference code's linear
    coefficients (one group); the budget split of two groups (largest SuperWeight first, or in
    proportion); the search's length (its default against one epoch, ``epoch_steps``
    batches); and the reduced baseline one channel above the widest that fits, for the
    interpolation at equal parameters."""
    wavg = Run("ssnfx", combiner="wavg")
    rows = {"one group, WAvg (softmax)": wavg,
            "one group, linear": replace(wavg, combiner="linear")}
    for label, strategy in (("depth", "depth"), ("learned", "search")):
        for split in ("largest-first", "proportional"):
            rows[f"{label}, K=2, {split}"] = replace(wavg, strategy=strategy, groups=2,
                                                     split=split)
    rows["learned, K=2, search of one epoch"] = replace(wavg, strategy="search", groups=2,
                                                        search_steps=epoch_steps)
    rows["reduced, whole channels"] = Run("reduced")
    rows["reduced, one channel wider"] = Run("reduced", wider=1)
    return {(label, b): replace(run, budget=b) for b in (0.01, 0.1) for label, run in rows.items()}


def families_table() -> Table:
    """One store for two families (SWN Sec. 4): ResNetFM and a small transformer as an
    ensemble, at the members' total (100%) and a quarter of it: independent members (at 25%
    narrower ones), against SWN with one cluster and with learned clusters."""
    swn = Run("ssnfx", method="swn", members=True)
    learned = replace(swn, strategy="search")
    table: Table = {("independent members", 1.0): Run("full", members=True),
                    ("independent members", 0.25): Run("reduced", members=True, budget=0.25)}
    for b in (1.0, 0.25):
        table[("SWN, one cluster", b)] = replace(swn, budget=b)
        table[("SWN, learned clusters (Eq. 2)", b)] = replace(learned, budget=b,
                                                              statistic="superweights")
        table[("SWN, learned clusters (coefficients)", b)] = replace(learned, budget=b,
                                                                     statistic="coefficients")
    return table


def faithful_table() -> Table:
    """The search as the papers define it (issue 21) at 100% and 10%: SSN Sec. 3.2 (K-means over
    phi of the provisional model, K = 3, the budget split in proportion) and SWN Sec. 2.2 (Eq. 2
    on a hard-shared model; the clusters trained hard-shared, then refined after 5% of
    training), with and without the guard, and the gradient covariation with the silhouette choice,
    against one group / cluster."""
    ssn, swn = Run("ssnfx"), Run("ssnfx", method="swn")
    covariation = dict(strategy="search", statistic="covariation", silhouette=True)
    rows = {"SSN, one group": ssn,
            "SSN, learned (Sec. 3.2)": replace(ssn, strategy="search"),
            "SSN, learned (Sec. 3.2), guard": replace(ssn, strategy="search", guard=True),
            "SSN, learned (covariation)": replace(ssn, **covariation),
            "SWN, one cluster": swn,
            "SWN, one cluster, hard then refine": replace(swn, hard=True, refine_at=0.05),
            "SWN, learned (Eq. 2), hard then refine": replace(swn, strategy="search", hard=True,
                                                             refine_at=0.05),
            "SWN, learned (Eq. 2), guard, hard then refine": replace(
                swn, strategy="search", hard=True, refine_at=0.05, guard=True),
            "SWN, learned (covariation)": replace(swn, **covariation)}
    return {(label, b): replace(run, budget=b)
            for b in (1.0, 0.1) for label, run in rows.items()}


#: --table -> its cells, given the batches of one epoch.
TABLES: dict[str, Callable[[int], Table]] = {
    "strategies": lambda _: strategies_table(), "groups": lambda _: groups_table(),
    "swn": lambda _: swn_table(), "settings": settings_table,
    "families": lambda _: families_table(), "faithful": lambda _: faithful_table()}
#: --table -> the results file and its title.
OUTPUTS = {"strategies": ("search", "Learned sharing vs data-free strategies"),
           "groups": ("search_groups", "Parameter groups at a fixed K (SSN Table 2 analogue)"),
           "swn": ("search_swn", "SuperWeight clusters, hard sharing and refine (SWN ablation)"),
           "settings": ("search_settings", "SSN's settings and the reduced baseline"),
           "families": ("search_families", "One store for a CNN and a transformer"),
           "faithful": ("search_faithful", "The search as the papers define it (issue 21)")}


def _structure(res: list[dict[str, Any]]) -> str:
    """The groups column: the group counts the seeds gave (and the rows refine untied), or
    the reduced baseline's width."""
    if "reduced_width" in res[0]:
        width = res[0]["reduced_width"]
        return f"({'/'.join(map(str, width)) if isinstance(width, list) else width})"
    if "groups" not in res[0]:  # the unshared models
        return "-"
    text = "/".join(str(g) for g in sorted({r["groups"] for r in res}))
    if "untied_rows" in res[0]:
        text += f", {statistics.mean(r['untied_rows'] for r in res):.1f} rows untied"
    return text


def _interpolated(table: dict[tuple[str, float], list[Run]], results: dict[Run, Any],
                  budget: float, original: int, seeds: int) -> str:
    """The row of the reduced baseline interpolated at exactly the budget's parameters."""
    below = table.get(("reduced, whole channels", budget), [])
    accs = interpolated(results, below, table.get(("reduced, one channel wider", budget), []),
                        budget * original)
    cell = mean_std(accs) + seed_note(below[:len(accs)], seeds) if accs else "-"
    return f"| {budget:.0%} | reduced, interpolated at equal parameters | - | {cell} | - | - |"


def step_time_ratio(width: int, loader, repeats: int = 15) -> float:
    """Median step time of the provisional search model over the unshared one (interleaved)."""
    x, y = next(iter(loader))
    plain = ResNetFM(width)
    provisional = provisional_model(ssnfx.trace(ResNetFM(width)), ssnfx.ShareConfig())
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
    parser.add_argument("--table", choices=tuple(TABLES), default="strategies",
                        help="groups: the SSN Table 2 analogue (fixed K, budgets 100%% and "
                             "10%%); swn: the SWN ablation; settings: SSN's combiner, budget "
                             "split, search length and the reduced baseline at equal "
                             "parameters; families: one store for a CNN and a transformer")
    args = parser.parse_args(argv)
    args.limit = args.limit or None
    if args.quick:
        args.limit, args.epochs, args.seeds, args.width = 600, 1, 1, 8
    data = fashion_data(args.quick)
    train_loader, _ = fashion_mnist(batch_size=128, limit=args.limit, root=data)
    cells = TABLES[args.table](len(train_loader))
    if args.quick:
        near = min({b for _, b in cells}, key=lambda b: abs(math.log(b / 0.1)))
        cells = {k: run for k, run in cells.items() if k[1] == near}
        cells = dict(list(cells.items())[::2])
    common = dict(width=args.width, epochs=args.epochs, limit=args.limit)
    full = seeds_of(Run("full", **common), args.seeds)
    table = {key: seeds_of(replace(run, **common), args.seeds) for key, run in cells.items()}
    results = run_all([*full, *(r for rs in table.values() for r in rs)], args.jobs,
                      args.threads, cache=not args.quick, train=not args.cached, data=data)
    full, table = completed(results, full, table)
    original = results[full[0]]["original"]
    rows = ["| budget | strategy | groups (width) | test accuracy % | setup s | train s |",
            "|---|---|---:|---:|---:|---:|"]
    fractions = []
    for (label, budget), runs in table.items():
        res = [results[r] for r in runs]
        if "error" in res[0]:
            rows.append(f"| {budget:.0%} | {label} | - | {refusal(res[0])} | - | - |")
            continue
        if runs[0].strategy == "search":
            fractions += [r["setup_s"] / r["train_s"] for r in res]
        members = "".join(f", {n} {mean_std([r['member_accuracy'][n] for r in res])}"
                          for n in res[0].get("member_accuracy", {}))
        rows.append(f"| {budget:.0%} | {label} | {_structure(res)} | "
                    f"{mean_std([r['accuracy'] for r in res])}{members}"
                    f"{seed_note(runs, args.seeds)} | "
                    f"{statistics.mean(r['setup_s'] for r in res):.1f} | "
                    f"{statistics.mean(r['train_s'] for r in res):.0f} |")
        if label == "reduced, one channel wider":
            rows.append(_interpolated(table, results, budget, original, args.seeds))
    ratio = step_time_ratio(args.width, train_loader)
    body = "\n".join([
        f"ResNetFM(width={args.width}), {original:,} parameters; full model "
        f"{mean_std([results[r]['accuracy'] for r in full])}% test accuracy.", "", *rows, "",
        f"{args.seeds} seed(s), {args.epochs} epoch(s) of Adam (lr 3e-3, cosine), batch 128, "
        f"{'all 60,000' if args.limit is None else f'{args.limit:,}'} training images. 'groups' "
        f"lists the group counts the seeds gave. 'setup s' is trace + search + rewrite "
        f"(data-free rows: trace + plan + rewrite).", "",
        f"Search cost: {statistics.mean(fractions or [0]):.1%} of the training time (default: "
        f"two epochs, statistics over the second). Step time of the provisional search "
        f"model over the unshared model (batch 128, forward + backward, median of interleaved "
        f"runs): {ratio:.2f}x.", "", data_note(data)])
    if not args.quick:
        name, title = OUTPUTS[args.table]
        write(name, f"{title}: Fashion-MNIST", body,
              f"python benchmarks/bench_search.py --table {args.table} --width {args.width} "
              f"--epochs {args.epochs} --limit {args.limit or 0} --seeds {args.seeds} "
              f"--jobs {args.jobs}")
    print(body)
    return body


if __name__ == "__main__":
    main()
