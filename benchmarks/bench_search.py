"""Learned sharing against the data-free strategies on Fashion-MNIST (Debian's
dataset-fashion-mnist), with a ResNet-style network, at budgets of 1%, 5% and 10%; plus what the
search costs.

    python benchmarks/bench_search.py [--quick] [--limit 5000] [--epochs 3] [--seeds 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import ssnfx
from ssnfx.data import fashion_mnist
from ssnfx.passes.rewrite import apply_store, target_stds
from ssnfx.passes.search import _WindowGenerator, _WindowStore
from ssnfx.training import accuracy, train

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import mean_std, write  # noqa: E402
from networks import ResNetFM  # noqa: E402

STRATEGIES = ["learned (search)", "single", "shape", "random"]


def step_time_ratio(width: int, loader, repeats: int = 15) -> float:
    """Median step time of the provisional search model over the unshared one (interleaved)."""
    x, y = next(iter(loader))
    plain = ResNetFM(width)
    gm = ssnfx.trace(ResNetFM(width))
    plan = ssnfx.make_plan(gm, 0.1, ssnfx.ShareConfig(combiner="emb", strategy="single"))
    slots = [s for s in plan.slots if s.shared]
    gen = _WindowGenerator(slots, plan.groups[0].numel, plan.groups[0].candidates,
                                      24, target_stds(gm, plan), 0)
    provisional = apply_store(gm, _WindowStore(plan, gen))
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
    parser.add_argument("--limit", type=int, default=5000, help="training images used")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--width", type=int, default=32)
    args = parser.parse_args(argv)
    if args.quick:
        args.limit, args.epochs, args.seeds = 600, 1, 1
    budgets = [0.1] if args.quick else [0.01, 0.05, 0.1]
    strategies = STRATEGIES[:2] if args.quick else STRATEGIES
    original = sum(p.numel() for p in ResNetFM(args.width).parameters())
    rows = ["| budget | strategy | groups | test accuracy % | search s | train s |",
            "|---|---|---:|---:|---:|---:|"]
    full = []
    search_fraction = []
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        tr, te = fashion_mnist(batch_size=128, seed=seed, limit=args.limit)
        model = ResNetFM(args.width)
        train(model, tr, F.cross_entropy, epochs=args.epochs, lr=3e-3, progress=False)
        full.append(accuracy(model, te))
    for budget in budgets:
        for strategy in strategies:
            accs, groups, searched, trained = [], [], [], []
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                tr, te = fashion_mnist(batch_size=128, seed=seed, limit=args.limit)
                start = time.perf_counter()
                if strategy.startswith("learned"):
                    shared = ssnfx.share(ResNetFM(args.width), budget, data=tr,
                                         loss_fn=F.cross_entropy,
                                         search_config=ssnfx.SearchConfig(seed=seed,
                                                                          progress=False))
                else:
                    shared = ssnfx.share(ResNetFM(args.width), budget,
                                         ssnfx.ShareConfig(strategy=strategy, seed=seed))
                searched.append(time.perf_counter() - start)
                start = time.perf_counter()
                train(shared, tr, F.cross_entropy, epochs=args.epochs, lr=3e-3, progress=False)
                trained.append(time.perf_counter() - start)
                accs.append(accuracy(shared, te))
                groups.append(len(shared.ssnfx.plan.groups))
                if strategy.startswith("learned"):
                    search_fraction.append(searched[-1] / trained[-1])
            rows.append(f"| {budget:.0%} | {strategy} | {statistics.mean(groups):g} | "
                        f"{mean_std(accs)} | {statistics.mean(searched):.1f} | "
                        f"{statistics.mean(trained):.1f} |")
            print(rows[-1], flush=True)
    ratio = step_time_ratio(args.width, tr)
    body = "\n".join([
        f"ResNetFM(width={args.width}), {original:,} parameters; full model "
        f"{mean_std(full)}% test accuracy.", "", *rows, "",
        f"{args.seeds} seed(s), {args.epochs} epoch(s) of Adam (lr 3e-3, cosine), batch 128, "
        f"the first {args.limit:,} training images and {args.limit // 6:,} test images. "
        f"'search s' is trace + search + rewrite (data-free rows: trace + plan + rewrite).",
        "", f"Search cost: {statistics.mean(search_fraction or [0]):.1%} of the training time "
        f"(default steps: a fifth of an epoch, at least 20). Step time of the provisional "
        f"search model over the unshared model (batch 128, forward + backward, median of "
        f"interleaved runs): {ratio:.2f}x."])
    if not args.quick:
        write("search", "Learned sharing vs data-free strategies: Fashion-MNIST", body,
              "python benchmarks/bench_search.py")
    return body


if __name__ == "__main__":
    main()
