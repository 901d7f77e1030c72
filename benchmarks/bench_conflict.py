"""Layers that genuinely conflict: does the search find the oracle grouping?

A network of two branches with same-shaped layers on unrelated tasks: Fashion-MNIST images
pooled to 8 x 8 and scikit-learn's 8 x 8 digits, one MLP each (4 hidden layers of 64 and a
10-way head), trained together on the sum of their losses. The oracle groups each branch's
layers apart. At one budget, for SSN (soft sharing, K-means over phi) and SWN (hard sharing
then refine, Eq. 2 clusters), 3 seeds: the test accuracy (mean of the two tasks) of one group,
a random balanced 2-way split, the search's learned grouping and the oracle, and the purity of
every grouping the search measured against the oracle (1.0: no group mixes the branches).

    python benchmarks/bench_conflict.py --seeds 3       # minutes on one core
    python benchmarks/bench_conflict.py --quick         # the tests' smoke run
"""
from __future__ import annotations

import argparse
import json
import random
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
import ssnfx  # noqa: E402
from ssnfx.data import digits, fashion_mnist_arrays  # noqa: E402
from ssnfx.training import refine_if_due  # noqa: E402

from common import RESULTS, data_note, fashion_data, publish  # noqa: E402

CACHE = RESULTS / "conflict_runs.jsonl"
BRANCHES = ("fashion", "digits")
#: The groupings compared, in table order: the search's with the method's own statistic, with
#: the gradient covariation (ssnfx.passes.statistics), and with the guard.
GROUPINGS = ("one group", "random split", "learned", "learned: covariation",
             "learned: covariation, silhouette", "learned: guard", "oracle")


class TwoTasks(nn.Module):
    """Two MLPs of identical shapes on two inputs; the outputs side by side, ``(B, 20)``."""

    def __init__(self, hidden: int = 64, depth: int = 4) -> None:
        super().__init__()
        for name in BRANCHES:
            layers: list[nn.Module] = []
            for i in range(depth):
                layers += [nn.Linear(64 if i == 0 else hidden, hidden), nn.ReLU()]
            self.add_module(name, nn.Sequential(*layers, nn.Linear(hidden, 10)))

    def forward(self, fashion: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.fashion(fashion.flatten(1)), self.digits(digits.flatten(1))], 1)


def loss_fn(out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The sum of the two tasks' cross-entropies."""
    return F.cross_entropy(out[:, :10], targets[:, 0]) + F.cross_entropy(out[:, 10:], targets[:, 1])


def tasks(source: Path, limit: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Training and test sets: Fashion-MNIST (the first ``limit`` training images) average-pooled
    to 8 x 8 and normalised, and the digits, as ``{split_task: (x, y)}``."""
    arrays = fashion_mnist_arrays(source)
    out = {}
    for split in ("train", "test"):
        x = torch.tensor(arrays[f"x_{split}"][:limit], dtype=torch.float32).unsqueeze(1) / 255
        x = F.adaptive_avg_pool2d(x, 8)
        out[f"{split}_fashion"] = ((x - 0.286) / 0.353, torch.tensor(arrays[f"y_{split}"][:limit],
                                                                    dtype=torch.long))
    train, test = digits(batch_size=10_000)
    out["train_digits"], out["test_digits"] = next(iter(train)), next(iter(test))
    return out


def paired_batches(data: dict[str, tuple[torch.Tensor, torch.Tensor]], batch: int, seed: int,
                   epochs: int) -> list[tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """``epochs`` passes over the digits in shuffled batches, each paired with as many random
    Fashion-MNIST images: ``((x_fashion, x_digits), targets (B, 2))``."""
    gen = torch.Generator().manual_seed(seed)
    (xf, yf), (xd, yd) = data["train_fashion"], data["train_digits"]
    out = []
    for _ in range(epochs):
        order = torch.randperm(len(yd), generator=gen)
        for idx in order.split(batch):
            if len(idx) < batch:
                continue
            f = torch.randint(0, len(yf), (len(idx),), generator=gen)
            out.append(((xf[f], xd[idx]), torch.stack([yf[f], yd[idx]], 1)))
    return out


@torch.no_grad()
def accuracies(model: nn.Module, data: dict[str, tuple[torch.Tensor, torch.Tensor]]
               ) -> dict[str, float]:
    model.eval()
    (xf, yf), (xd, yd) = data["test_fashion"], data["test_digits"]
    n = min(len(yf), len(yd))
    out = model(xf[:n], xd[:n])
    model.train()
    return {"fashion": float((out[:n, :10].argmax(1) == yf[:n]).float().mean()),
            "digits": float((out[:n, 10:].argmax(1) == yd[:n]).float().mean())}


def branch(slot: str) -> str:
    return slot.split(".")[0]


def purity(groups: list[list[str]]) -> float:
    """The share of layers in a group whose majority branch is their own (1.0: no mixing)."""
    total = sum(len(g) for g in groups)
    return sum(max(sum(branch(s) == b for s in g) for b in BRANCHES) for g in groups) / total


@dataclass(frozen=True)
class Run:
    method: str               # "ssn" or "swn" (hard sharing, then refine)
    grouping: str             # one of GROUPINGS
    seed: int = 0
    budget: float = 0.25
    epochs: int = 30
    batch: int = 64
    lr: float = 3e-3
    limit: int = 10_000

    @property
    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def config_of(run: Run) -> ssnfx.ShareConfig:
    if run.method == "swn":
        return ssnfx.ShareConfig(method="swn", options={"hard_sharing": True}, seed=run.seed)
    return ssnfx.ShareConfig(method="ssn", seed=run.seed)


def execute(run: Run, data: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    torch.manual_seed(run.seed)
    model = TwoTasks()
    config = config_of(run)
    batches = paired_batches(data, run.batch, run.seed, run.epochs)
    per_epoch = len(batches) // run.epochs
    start = time.process_time()
    out: dict[str, Any] = {}
    if run.grouping.startswith("learned"):
        search = ssnfx.SearchConfig(
            progress=False, guard=run.grouping.endswith("guard"),
            silhouette=run.grouping.endswith("silhouette"),
            statistic="covariation" if "covariation" in run.grouping else None)
        shared = ssnfx.share(model, run.budget, config, data=batches[: per_epoch],
                             loss_fn=loss_fn, search_config=search)
        m = shared.ssnfx.plan.measured
        out["groups"] = [g.slots for g in shared.ssnfx.plan.groups]
        out["purity"] = {"plan": purity(out["groups"]),
                         "superweight_clusters": purity(m["superweight_clusters"])}
        if m.get("groups"):
            out["purity"]["kmeans_groups"] = purity(m["groups"])
        out["statistic"] = m["statistic"]
    else:
        gm = ssnfx.trace(model)
        names = [s.name for s in ssnfx.make_plan(gm, run.budget, config).slots if s.shared]
        if run.grouping == "one group":
            groups = [names]
        elif run.grouping == "oracle":
            groups = [[n for n in names if branch(n) == b] for b in BRANCHES]
        else:  # a random balanced 2-way split
            shuffled = random.Random(run.seed).sample(names, len(names))
            groups = [sorted(shuffled[: len(names) // 2], key=names.index),
                      sorted(shuffled[len(names) // 2:], key=names.index)]
        plan = ssnfx.make_plan(gm, run.budget, config, groups=groups)
        shared = ssnfx.passes.bind(model, gm, plan)
        out["groups"] = groups
        out["purity"] = {"plan": purity(groups)}
    out["setup_s"] = round(time.process_time() - start, 2)
    out["params"] = sum(p.numel() for p in shared.parameters())
    optimizer = torch.optim.Adam(shared.parameters(), lr=run.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, len(batches))
    refine_data = batches[:10]
    for step, ((xf, xd), y) in enumerate(batches):
        loss = loss_fn(shared(xf, xd), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        refine_if_due(shared, refine_data, loss_fn, step + 1, len(batches))
    out["refined"] = shared.ssnfx.plan.measured.get("refined", [])
    out["accuracy"] = accuracies(shared, data)
    out["train_s"] = round(time.process_time() - start, 2)
    return out


def load() -> dict[str, dict[str, Any]]:
    if not CACHE.exists():
        return {}
    rows = (json.loads(line) for line in CACHE.read_text().splitlines() if line.strip())
    return {r["key"]: r["result"] for r in rows}


def table(results: dict[str, dict[str, Any]], runs: list[Run]) -> str:
    def cell(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
        if not values:
            return "-"
        mean = statistics.mean(values) * scale
        spread = f" ± {statistics.stdev(values) * scale:.{digits}f}" if len(values) > 1 else ""
        return f"{mean:.{digits}f}{spread}"

    lines = ["| method | grouping | seeds | groups | accuracy % (mean of both) | fashion % "
             "| digits % | purity of the plan | purity: K-means groups "
             "| purity: gradient clusters |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        if r.key in results:
            cells.setdefault((r.method, r.grouping), []).append(results[r.key])
    for (method, grouping), rs in cells.items():
        acc = [statistics.mean(x["accuracy"].values()) for x in rs]
        purities = {k: [x["purity"][k] for x in rs if k in x["purity"]]
                    for k in ("plan", "kmeans_groups", "superweight_clusters")}
        label = {"ssn": "SSN (soft)", "swn": "SWN (hard, then refine)"}[method]
        counts = "/".join(str(len(x["groups"])) for x in rs)
        lines.append(f"| {label} | {grouping} | {len(rs)} | {counts} | {cell(acc)} | "
                     f"{cell([x['accuracy']['fashion'] for x in rs])} | "
                     f"{cell([x['accuracy']['digits'] for x in rs])} | "
                     + " | ".join(cell(purities[k], 1.0, 2) for k in purities) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", type=float, default=0.25)
    p.add_argument("--methods", nargs="+", default=["ssn", "swn"], choices=["ssn", "swn"])
    p.add_argument("--quick", action="store_true", help="a few steps on the tests' sample")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    source = fashion_data(args.quick)
    epochs, limit = (2, 2000) if args.quick else (30, 10_000)
    runs = [Run(m, g, seed, args.budget, epochs=epochs, limit=limit)
            for seed in range(1 if args.quick else args.seeds)
            for m in args.methods for g in GROUPINGS]
    data = tasks(source, limit)
    results = {} if args.quick else load()
    for run in runs:
        if run.key in results:
            continue
        results[run.key] = execute(run, data)
        if not args.quick:
            with CACHE.open("a") as f:
                f.write(json.dumps({"key": run.key, "result": results[run.key]}) + "\n")
            print(f"{run.method} {run.grouping} seed {run.seed}: "
                  f"{results[run.key]['accuracy']} purity {results[run.key]['purity']}",
                  flush=True)
    body = (table(results, runs) + f"\n\nTwoTasks: two MLPs (4 x Linear(64), head 10) on "
            f"Fashion-MNIST pooled to 8 x 8 ({limit:,} training images) and scikit-learn's "
            f"digits, trained together ({epochs} epochs of the digits, Adam, cosine) at "
            f"{args.budget:.0%} of their parameters. Purity: the share of layers whose group's "
            f"majority branch is their own (oracle 1.0; single layers are pure too, so the "
            f"groups column gives each seed's count). The search: SearchConfig's defaults "
            f"on one epoch of the paired batches (the method's statistic: SSN K-means over phi, "
            f"SWN Eq. 2 with tau 0.1), or with statistic='covariation' (K-means over the "
            f"correlations of gradient sizes, 3 groups or the count by silhouette score), or "
            f"with guard=True.\n\n" + data_note(source))
    return publish("conflict", "Conflicting layers: learned groups against the oracle", body,
                   "python benchmarks/bench_conflict.py", args.quick)


if __name__ == "__main__":
    main()
