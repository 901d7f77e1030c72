"""The two forms of a shared model, step time against the unshared model in one run.

``ssnfx.share`` returns the user's class, whose layers read generated weights through
properties (``ssnfx/core/shared_model.py``); ``ssnfx.rewrite`` returns the torch.fx graph with the
generators in it. Both generate the same weights from the same store; this measures what each
costs per training step (forward, loss, backward, Adam) and per inference call, as the median of
per-round ratios to the unshared model, the three models taking turns.

    python benchmarks/bench_forms.py [--quick] [--rounds 15]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn as nn
import torchvision

import ssnfx

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import write  # noqa: E402


def _wrn(depth: int = 16, width: int = 4) -> nn.Module:
    from networks import WideResNet  # the benchmarks' WRN

    return WideResNet(depth, width, classes=10)


CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int]] = {
    # name: (model, input shape, classes)
    "WRN-16-4, batch 128": (_wrn, (128, 3, 32, 32), 10),
    "mobilenet_v3_large, batch 32, 96 px": (
        lambda: torchvision.models.mobilenet_v3_large(num_classes=10), (32, 3, 96, 96), 10),
    "vit_b_16, batch 2": (lambda: torchvision.models.vit_b_16(num_classes=10),
                          (2, 3, 224, 224), 10),
}
QUICK = {"SmallCNN-like, batch 8": (
    lambda: nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)),
    (8, 3, 16, 16), 10)}


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
          y: torch.Tensor) -> float:
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    return time.perf_counter() - start


def _infer(model: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        model(x)
    return time.perf_counter() - start


def measure(make: Callable[[], nn.Module], shape: tuple[int, ...], classes: int,
            budget: float, rounds: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = make()
    gm = ssnfx.trace(model)
    plan = ssnfx.make_plan(gm, budget)
    models = {"unshared": copy.deepcopy(model), "class": ssnfx.passes.bind(model, gm, plan),
              "graph": ssnfx.rewrite(gm, plan)}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in models.items()}
    x = torch.randn(*shape)
    y = torch.randint(0, classes, (shape[0],))
    ratios: dict[str, list[float]] = {"class": [], "graph": [], "class eval": [],
                                      "graph eval": [], "class again": [], "graph again": []}
    for m in models.values():  # warm-up: allocator, lazy inits
        m.train()
        _step(m, opts[next(k for k, v in models.items() if v is m)], x, y)
    for r in range(rounds):
        order = list(models) if r % 2 == 0 else list(reversed(models))
        train = {k: _step(models[k].train(), opts[k], x, y) for k in order}
        infer = {k: _infer(models[k].eval(), x) for k in order}  # the first after a step
        again = {k: _infer(models[k], x) for k in order}  # the store unchanged since
        for form in ("class", "graph"):
            ratios[form].append(train[form] / train["unshared"])
            ratios[f"{form} eval"].append(infer[form] / infer["unshared"])
            ratios[f"{form} again"].append(again[form] / again["unshared"])
    return {k: statistics.median(v) for k, v in ratios.items()}


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one tiny model, 3 rounds")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases, rounds = (QUICK, 3) if args.quick else (CASES, args.rounds)
    rows = ["| model | budget | step: class | step: graph | no_grad after a step: class | "
            "graph | no_grad again: class | graph |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (make, shape, classes) in cases.items():
        r = measure(make, shape, classes, args.budget, rounds)
        rows.append(f"| {name} | {args.budget:.0%} | {r['class']:.2f}x | {r['graph']:.2f}x | "
                    f"{r['class eval']:.2f}x | {r['graph eval']:.2f}x | "
                    f"{r['class again']:.2f}x | {r['graph again']:.2f}x |")
        print(rows[-1], flush=True)
    body = "\n".join(rows) + (
        f"\n\nRatios to the unshared model's time, median of {rounds} rounds (the unshared "
        f"model, the user's class from ssnfx.share and the graph from ssnfx.rewrite taking "
        f"turns, order alternating), {args.threads} CPU threads; a training step is forward, "
        f"cross-entropy, backward and Adam; no_grad is one inference call right after the "
        f"step (both forms generate the weights, the store having changed) and one more "
        f"(the class reuses what it generated, as generate() does token after token; the "
        f"graph generates them again).")
    print(body)
    if not args.quick:
        write("forms", "The shared model's two forms: the user's class and the graph", body,
              "python benchmarks/bench_forms.py")
    return body


if __name__ == "__main__":
    main()
