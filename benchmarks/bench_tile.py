"""SWN's tile: SuperWeights no longer than t on either side, on a CNN and on a transformer LM.

The evidence behind :func:`ssnfx.core.methods.auto_tile`. The CNN is ResNetFM(16) on all of
Fashion-MNIST (benchmarks/fmnist.py, 3 epochs, the accuracy table's settings); the LM is
``ByteLM(128, 4)`` on torch's sources (benchmarks/bench_lm.py, 2,000 steps). Runs are cached
with their benchmarks; this script trains the CNN runs it lacks and tabulates both.

    python benchmarks/bench_tile.py            # the CNN runs: about 20 minutes a run, one core
    python benchmarks/bench_tile.py --cached   # tabulate only
    python benchmarks/bench_tile.py --quick    # the tests' smoke run
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_lm  # noqa: E402

from common import data_note, fashion_data, publish  # noqa: E402
from fmnist import Run, run_all  # noqa: E402

BUDGETS = (0.05, 0.1)
#: Tiles compared: None is the automatic choice (on this CNN: the layers' own cuts).
TILES = (None, 32, 16)


def cnn_table(results: dict[Run, dict], seeds: int, common: dict) -> str:
    lines = ["| tile | " + " | ".join(f"{b:.0%}" for b in BUDGETS) + " |",
             "|---|" + "---:|" * len(BUDGETS)]
    for tile in TILES:
        cells = []
        for budget in BUDGETS:
            acc = [results[r]["accuracy"] * 100 for s in range(seeds)
                   if (r := Run("ssnfx", budget, "swn", seed=s, tile=tile, **common)) in results
                   and "accuracy" in results[r]]
            spread = f" ± {statistics.stdev(acc):.1f}" if len(acc) > 1 else ""
            cells.append(f"{statistics.mean(acc):.1f}{spread} ({len(acc)})" if acc else "-")
        label = tile or "auto (here: the layers' own cuts)"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lm_table() -> str:
    rows: dict[str, dict[float, list[float]]] = {}
    for key, value in bench_lm.load().items():
        run = bench_lm.Run(**json.loads(key))
        if run.variant != "swn" or run.search or run.budget not in BUDGETS \
                or run.steps != bench_lm.Run.steps:  # the 2,000-step runs only
            continue
        config = json.loads(run.config) if run.config else {}
        if set(config) - {"tile"}:
            continue
        tile = config.get("tile")
        label = "auto" if tile is None else ("0 (the layers' own cuts)" if tile == 0 else tile)
        rows.setdefault(str(label), {}).setdefault(run.budget, []).append(value["bpb"])
    lines = ["| tile | " + " | ".join(f"{b:.0%}" for b in BUDGETS) + " |",
             "|---|" + "---:|" * len(BUDGETS)]
    for label, by_budget in sorted(rows.items()):
        cells = [f"{statistics.mean(v):.3f} ({len(v)})" if (v := by_budget.get(b)) else "-"
                 for b in BUDGETS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--cached", action="store_true", help="train nothing")
    p.add_argument("--quick", action="store_true", help="one tiny run, nothing cached")
    args = p.parse_args(argv)
    common = dict(epochs=1, limit=600, width=8) if args.quick else {}
    seeds = 1 if args.quick else args.seeds
    runs = [Run("ssnfx", b, "swn", seed=s, tile=t, **common)
            for s in range(seeds) for b in BUDGETS for t in (TILES[:2] if args.quick else TILES)]
    source = None if args.cached else fashion_data(args.quick)
    results = run_all(runs, cache=not args.quick, train=not args.cached, data=source)
    body = ("**CNN**: ResNetFM(16) on Fashion-MNIST, SWN one cluster (soft sharing), test "
            "accuracy % (seeds in brackets).\n\n" + cnn_table(results, seeds, common)
            + "\n\n**LM**: ByteLM(128, 4), SWN data-free, validation bits per byte (lower is "
            "better; runs in bench_lm's cache).\n\n" + lm_table()
            + (f"\n\n{data_note(source)}" if source is not None else ""))
    return publish("tile", "SWN's tile: the longest SuperWeight side", body,
                   "python benchmarks/bench_tile.py", args.quick)


if __name__ == "__main__":
    main()
