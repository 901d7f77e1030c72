"""Accuracy at a budget on sklearn's digits: full model, reduced-width baseline, and ssnfx under
each data-free strategy, method and combiner (several seeds, mean ± std).

    python benchmarks/bench_digits.py [--quick]
"""
from __future__ import annotations

import argparse
import math
import sys

import torch
import torch.nn.functional as F

import ssnfx
from ssnfx.data import digits
from ssnfx.training import accuracy, train

sys.path.insert(0, __file__.rsplit("/", 1)[0])
sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/examples")
from common import mean_std, write  # noqa: E402
from digits_cnn import DigitsCNN  # noqa: E402

CONFIGS = {
    "ssnfx single/WAvg": ssnfx.ShareConfig(combiner="wavg"),
    "ssnfx single/Emb": ssnfx.ShareConfig(combiner="emb"),
    "ssnfx single/RR": ssnfx.ShareConfig(combiner="rr"),
    "ssnfx single/SWN": ssnfx.ShareConfig(method="swn"),
    "ssnfx depth bins (3)": ssnfx.ShareConfig(strategy="depth"),
    "ssnfx by shape": ssnfx.ShareConfig(strategy="shape"),
}


def params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def reduced_width(budget: int) -> int:
    """The widest DigitsCNN with at most ``budget`` parameters (the papers' reduced baseline)."""
    return max(w for w in range(1, 33) if params(DigitsCNN(w)) <= budget) \
        if params(DigitsCNN(1)) <= budget else 1


def run(make, seed: int, epochs: int) -> tuple[float, int]:
    torch.manual_seed(seed)
    train_loader, test_loader = digits(batch_size=64, seed=seed)
    model = make()
    train(model, train_loader, F.cross_entropy, epochs=epochs, lr=1e-2, progress=False)
    return accuracy(model, test_loader), params(model)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one budget, one seed, 1 epoch")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args(argv)
    budgets = [0.1] if args.quick else [0.01, 0.05, 0.1, 0.25, 1.0, 4.0]
    seeds = range(1 if args.quick else args.seeds)
    epochs = 1 if args.quick else args.epochs
    configs = dict(list(CONFIGS.items())[:2]) if args.quick else CONFIGS
    full = [run(DigitsCNN, s, epochs) for s in seeds]
    original = full[0][1]
    full_acc = mean_std([a for a, _ in full])
    rows = [f"Full model: {original:,} parameters, test accuracy {full_acc}%.",
            "", "| budget | method | parameters | test accuracy % |", "|---|---|---:|---:|"]
    for budget in budgets:
        target = math.floor(budget * original)
        if budget < 1:
            width = reduced_width(target)
            res = [run(lambda: DigitsCNN(width), s, epochs) for s in seeds]
            rows.append(f"| {budget:g} | reduced baseline (width {width}) | {res[0][1]:,} | "
                        f"{mean_std([a for a, _ in res])} |")
        for label, cfg in configs.items():
            try:
                res = [run(lambda: ssnfx.share(DigitsCNN(), budget, cfg), s, epochs) for s in seeds]
            except ssnfx.BudgetError as e:
                rows.append(f"| {budget:g} | {label} | - | infeasible: {str(e)[:60]}... |")
                continue
            acc = mean_std([a for a, _ in res])
            rows.append(f"| {budget:g} | {label} | {res[0][1]:,} | {acc} |")
        print("\n".join(rows[-len(configs) - 1:]), flush=True)
    body = "\n".join(rows) + (f"\n\n{len(seeds)} seeds, {epochs} epochs of Adam (lr 0.01, cosine), "
                              f"batch 64, 1,437 train / 360 test images.")
    if not args.quick:
        write("digits", "Accuracy at a budget: sklearn digits, DigitsCNN", body,
              "python benchmarks/bench_digits.py")
    return body


if __name__ == "__main__":
    main()
