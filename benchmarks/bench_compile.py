"""Compile time of trace, plan, rewrite and fold (no search) across zoo models of growing size.

    python benchmarks/bench_compile.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torchvision

import ssnfx

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import write  # noqa: E402

MODELS = ["mobilenet_v3_small", "resnet18", "resnet50", "convnext_tiny", "vit_b_16",
          "efficientnet_b7", "wide_resnet101_2", "vgg16", "vit_l_16"]


def measure(name: str, budget: float, repeats: int) -> dict[str, float]:
    model = torchvision.models.get_model(name)
    ssnfx.share(model, budget)  # warm-up: imports, allocator
    best: dict[str, float] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        gm = ssnfx.trace(model)
        t1 = time.perf_counter()
        plan = ssnfx.make_plan(gm, budget)
        t2 = time.perf_counter()
        shared = ssnfx.rewrite(gm, plan)
        t3 = time.perf_counter()
        ssnfx.fold(shared)
        t4 = time.perf_counter()
        for key, value in (("trace", t1 - t0), ("plan", t2 - t1), ("rewrite", t3 - t2),
                           ("fold", t4 - t3), ("total", t4 - t0)):
            best[key] = min(best.get(key, float("inf")), value)
    best["params"] = sum(p.numel() for p in model.parameters())
    return best


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="two small models, one repeat")
    parser.add_argument("--budget", type=float, default=0.1)
    args = parser.parse_args(argv)
    names = MODELS[:2] if args.quick else MODELS
    rows = ["| model | parameters | trace s | plan s | rewrite s | fold s | total s |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        r = measure(name, args.budget, 1 if args.quick else 3)
        rows.append(f"| {name} | {r['params'] / 1e6:.1f}M | {r['trace']:.3f} | {r['plan']:.3f} | "
                    f"{r['rewrite']:.3f} | {r['fold']:.3f} | {r['total']:.3f} |")
        print(rows[-1], flush=True)
    body = "\n".join(rows) + (f"\n\nBest of 3, budget {args.budget}. Trace runs twice (train and "
                              f"eval mode); rewrite and fold each generate every weight once.")
    if not args.quick:
        write("compile", "Compile time (trace + plan + rewrite + fold)", body,
              "python benchmarks/bench_compile.py")
    return body


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
