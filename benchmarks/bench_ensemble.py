"""Several models from one store (SWN Sec. 4) on Fashion-MNIST: a heterogeneous ensemble of three
widths of ResNetFM shared from one store, against the same members trained independently with
the same total parameters; accuracy of each member and of the ensemble, and accuracy against
inference time for every anytime subset (table and plot).

    python benchmarks/bench_ensemble.py [--quick] [--epochs 3] [--seeds 2] [--limit 20000]
        [--widths 8 12 16] [--budgets 1.0 0.5] [--threads 1]

Budget 1.0 gives the shared ensemble exactly the independent members' total; at 0.5 its rival is
an independent ensemble of narrower members with at most that total (each width scaled by the
same factor). The defaults take about an hour on one thread of this project's 2-core machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import ssnfx
from ssnfx.anytime import anytime_frontier, member_costs, subset_accuracy
from ssnfx.ensemble import ensemble_loss, member, member_names
from ssnfx.training import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, data_note, fashion_data, fashion_loaders, mean_std, write  # noqa: E402
from networks import ResNetFM  # noqa: E402

LR = 3e-3
PLOT = "ensemble_anytime.png"


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def scaled_widths(widths: list[int], total: int) -> list[int]:
    """The widths scaled by one common factor, the largest whose ResNetFMs total at most
    ``total`` parameters (each width at least 1)."""
    best = [1] * len(widths)
    for step in range(1000, 0, -1):
        cand = [max(1, round(w * step / 1000)) for w in widths]
        if sum(params(ResNetFM(w)) for w in cand) <= total:
            best = cand
            break
    return best


@torch.no_grad()
def logits_of(model: torch.nn.Module, loader: Any) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x) for x, _ in loader])


def independent(widths: list[int], seed: int, epochs: int, train_loader: Any, test_loader: Any
                ) -> tuple[dict[str, torch.Tensor], float, int]:
    """Each width trained on its own: test logits by member, CPU seconds, parameters."""
    logits, seconds, total = {}, 0.0, 0
    for i, w in enumerate(widths):
        torch.manual_seed(1000 * seed + i)
        model = ResNetFM(w)
        total += params(model)
        start = time.process_time()
        train(model, train_loader, F.cross_entropy, epochs=epochs, lr=LR, progress=False)
        seconds += time.process_time() - start
        logits[f"w{w}"] = logits_of(model, test_loader)
    return logits, seconds, total


def shared(widths: list[int], budget: float, seed: int, epochs: int, train_loader: Any,
           test_loader: Any) -> tuple[dict[str, torch.Tensor], float, int, Any]:
    """The widths as members of one store at ``budget``, trained together (the sum of their
    losses); test logits by member from the folded members, CPU seconds, parameters, folded."""
    torch.manual_seed(seed)
    model = ssnfx.share({f"w{w}": ResNetFM(w) for w in widths}, budget,
                        ssnfx.ShareConfig(seed=seed))
    start = time.process_time()
    train(model, train_loader, ensemble_loss(F.cross_entropy), epochs=epochs, lr=LR,
          progress=False)
    seconds = time.process_time() - start
    folded = ssnfx.fold(model.eval())
    logits = {n: logits_of(member(folded, n), test_loader)
              for n in member_names(folded)}
    return logits, seconds, params(model), folded


def plot(curves: dict[str, tuple[dict, dict[tuple, list[float]]]], costs: dict[str, dict],
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (label, (_, scores)), color in zip(curves.items(), ("C0", "C1", "C2", "C3")):
        cost = costs[label]
        mean = {s: statistics.mean(v) for s, v in scores.items()}
        xs = [1000 * sum(cost[n] for n in s) for s in mean]
        ax.scatter(xs, [100 * a for a in mean.values()], color=color, s=18, alpha=0.6)
        front = anytime_frontier(cost, mean)
        ax.plot([1000 * c for _, c, _ in front], [100 * a for _, _, a in front], "-o",
                color=color, label=label, markersize=4)
        for subset, c, a in front:
            ax.annotate("+".join(subset), (1000 * c, 100 * a), fontsize=6,
                        textcoords="offset points", xytext=(3, -9))
    ax.set_xlabel("inference time per batch of 256 (ms, one thread; members in series)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Anytime inference on Fashion-MNIST: every subset of members (dots), the "
                 "frontier (lines)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny run for the tests")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--limit", type=int, default=20000, help="training images (0: all)")
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 12, 16])
    parser.add_argument("--budgets", type=float, nargs="+", default=[1.0, 0.5])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.seeds, args.limit, args.widths, args.budgets = 1, 1, 512, [4, 6], [0.5]
    torch.set_num_threads(args.threads)
    limit = args.limit or None
    widths = args.widths
    total = sum(params(ResNetFM(w)) for w in widths)
    rivals = {b: widths if b == 1.0 else scaled_widths(widths, int(b * total))
              for b in args.budgets}
    # label -> (member names, {subset: [accuracy per seed]}); params and seconds per label
    curves: dict[str, tuple[list[str], dict[tuple, list[float]]]] = {}
    info: dict[str, dict[str, list[float]]] = {}
    costs: dict[str, dict[str, float]] = {}
    test_images = None
    data = fashion_data(args.quick)
    for seed in range(args.seeds):
        train_loader, test_loader = fashion_loaders(limit, seed, root=data,
                                                    test_limit=1000 if args.quick else None)
        targets = torch.cat([y for _, y in test_loader])
        runs = []
        for budget in args.budgets:
            logits, sec, n, folded = shared(widths, budget, seed, args.epochs, train_loader,
                                            test_loader)
            runs.append((f"shared, budget {budget:g}", logits, sec, n, folded))
        for w_set in dict.fromkeys(tuple(v) for v in rivals.values()):
            logits, sec, n = independent(list(w_set), seed, args.epochs, train_loader,
                                         test_loader)
            runs.append((f"independent {'/'.join(map(str, w_set))}", logits, sec, n, None))
        if test_images is None:
            test_images = next(iter(test_loader))[0][:256]
        for label, logits, sec, n, folded in runs:
            scores = subset_accuracy(logits, targets)
            names, table = curves.setdefault(label, (list(logits), {}))
            for s, a in scores.items():
                table.setdefault(s, []).append(a)
            info.setdefault(label, {"params": [], "seconds": []})
            info[label]["params"].append(n)
            info[label]["seconds"].append(sec)
            if label not in costs:
                # Inference time of each member alone, folded, measured once per architecture
                # (the shared and independent members of one width are the same network).
                model = folded if folded is not None else ssnfx.fold(ssnfx.share(
                    {k: ResNetFM(int(k[1:])) for k in logits}, 1.0))
                costs[label] = member_costs(model, test_images, repeats=5 if args.quick
                                                  else 30, clock=time.thread_time)
            print(f"seed {seed} {label}: " + ", ".join(
                f"{'+'.join(s)} {100 * a:.2f}" for s, a in scores.items()
                if len(s) in (1, len(logits))), flush=True)

    lines = [f"Members: ResNetFM of widths {'/'.join(map(str, widths))} "
             f"({' + '.join(f'{params(ResNetFM(w)):,}' for w in widths)} = {total:,} "
             f"parameters). Test accuracy (%) of each member alone and of the ensemble (mean of "
             f"the members' softmax), {args.seeds} seed(s), mean ± std.", "",
             "| model | trainable parameters | member accuracy (narrow → wide) | ensemble | "
             "train CPU s |", "|---|---:|---|---:|---:|"]
    for label, (names, table) in curves.items():
        singles = " / ".join(f"{n} {mean_std(table[(n,)])}" for n in names)
        lines.append(f"| {label} | {int(statistics.mean(info[label]['params'])):,} | {singles} "
                     f"| {mean_std(table[tuple(names)])} | "
                     f"{statistics.mean(info[label]['seconds']):.0f} |")
    lines += ["", "Anytime inference: every subset of members, its inference time (the sum of its "
              "members' times: they run one after another; folded members, batch of 256, one "
              "thread, median of 30 runs of CPU time) and test accuracy. ✓ marks the frontier: "
              "more accurate than every cheaper subset. Without validation scores "
              "`ssnfx.anytime.anytime_subset` runs the cheapest members first; with them, the best "
              "subset that fits.", ""]
    for label, (names, table) in curves.items():
        cost = costs[label]
        mean = {s: statistics.mean(v) for s, v in table.items()}
        front = {s for s, _, _ in anytime_frontier(cost, mean)}
        lines += [f"**{label}**", "", "| subset | ms | accuracy % | frontier |",
                  "|---|---:|---:|:-:|"]
        for s in sorted(table, key=lambda s: sum(cost[n] for n in s)):
            lines.append(f"| {'+'.join(s)} | {1000 * sum(cost[n] for n in s):.1f} | "
                         f"{mean_std(table[s])} | {'✓' if s in front else ''} |")
        lines.append("")
    lines.append(f"{args.epochs} epoch(s) of Adam (lr {LR:g}, cosine) for every model, batch 128, "
                 f"{'all 60,000' if limit is None else f'the first {limit:,}'} training images, "
                 f"{len(targets):,} test images. A shared ensemble trains on the sum of its "
                 f"members' losses with one optimizer; independent members train one by one. "
                 f"'train CPU s' is the process's CPU time for the whole ensemble.")
    lines += ["", data_note(data)]
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        plot(curves, costs, RESULTS / PLOT)
        lines += ["", f"![accuracy against inference time](results/{PLOT})"]
    body = "\n".join(lines)
    if not args.quick:
        command = "nice -n 10 python benchmarks/bench_ensemble.py" + \
            (" " + " ".join(argv) if argv else " " + " ".join(sys.argv[1:])).rstrip()
        write("ensemble", "Ensembles and anytime inference from one store: Fashion-MNIST", body,
              command.strip())
    print(body)
    return body


if __name__ == "__main__":
    main()
