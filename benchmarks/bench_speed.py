"""Training and inference speed of shared models against the unshared model, in one run.

Training: the median time of a full step (forward, loss, backward, Adam step) of the shared model
over the unshared one, with the models' steps interleaved so that machine noise hits all alike,
for a CNN (WRN-16-4, batch 128, 32x32) and a transformer (torchvision vit_b_16 at a small batch,
where weight generation weighs most), at budgets 1%, 10% and 100%. Inference: the folded model
against the original (the same graph, so 1.00x is expected). For the ViT it then splits the
shared step into weight generation (forward and backward of the generators alone) and the rest,
and lists the operators that take the time (torch.profiler).

Short steps: mobile networks (mobilenet_v3_large, timm's ghostnet_100, efficientnet_b0,
regnet_y_400mf) at batch 32 and 96 px, SGD with momentum, where a step is short and ssnfx's
fixed per-step work weighs most: the median of per-round step ratios (the unshared and shared
models and each shared model's generation alone take turns, order alternating between rounds),
and generation's share of the step beside it. A budget below a network's private parameters is
refused; the table then shows its least budget.

    python benchmarks/bench_speed.py [--quick] [--repeats 11] [--rounds 31]
                                     [--only main|short|generation]
                                     [--retain-freed-memory]

``--only generation``: the generation modes (ShareConfig.generation: batched, auto, jit)
against the unshared step, WRN-16-4, vit_b_16 and the short-steps networks at 10% and 100%,
interleaved (printed).

``--retain-freed-memory`` runs the process with glibc keeping freed memory for reuse
(:func:`ssnfx.cpu_memory.retain_freed_memory`, what the ``ssnfx`` command does): large tensors
are then not faulted in afresh at every step, for the unshared and the shared models alike.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import ssnfx
from ssnfx.core.jit import GENERATIONS
from ssnfx.cpu_memory import retain_freed_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write  # noqa: E402
from networks import WideResNet  # noqa: E402

BUDGETS = [0.01, 0.1, 1.0]


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
          y: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def interleaved(fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 2
                ) -> dict[str, float]:
    """Median seconds of each function, called in turn ``repeats`` times after a warm-up."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def interleaved_ratios(fns: dict[str, Callable[[], None]], rounds: int, base: str,
                       warmup: int = 2, keep: bool = False) -> tuple:
    """Median seconds of each function and median of its per-round ratio to ``base`` (and, with
    ``keep``, every round's seconds).

    Each round calls every function once, in an order that alternates between rounds (forward,
    then reversed), so that a drift in machine load or a cache warmed by the previous call hits
    all alike; a round's ratio compares steps taken within a second of each other.
    """
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    ratios = {k: statistics.median(t / b for t, b in zip(v, times[base]))
              for k, v in times.items()}
    medians = {k: statistics.median(v) for k, v in times.items()}
    return (medians, ratios, times) if keep else (medians, ratios)


def training_ratios(make: Callable[[], nn.Module], x: torch.Tensor, budgets: list[float],
                    repeats: int) -> tuple[dict[str, float], dict[str, float],
                                           dict[str, nn.Module]]:
    """Median step seconds of the unshared model and of each shared one, and the median of
    each one's per-round ratio to the unshared step."""
    torch.manual_seed(0)
    y = torch.randint(0, 10, (x.shape[0],))
    models = {"unshared": make()}
    models.update({f"{b:.0%}": ssnfx.share(make(), b) for b in budgets})
    fns = {}
    for name, model in models.items():
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        fns[name] = lambda m=model, o=opt: _step(m, o, x, y)
    return (*interleaved_ratios(fns, repeats, "unshared"), models)


def inference_ratio(original: nn.Module, shared: nn.Module, x: torch.Tensor, repeats: int
                    ) -> float:
    folded = ssnfx.fold(shared.eval())
    original = copy.deepcopy(original).eval()
    original.load_state_dict(folded.state_dict())

    def run(m: nn.Module) -> Callable[[], None]:
        def call() -> None:
            with torch.no_grad():
                m(x)
        return call

    t = interleaved({"original": run(original), "folded": run(folded)}, repeats)
    return t["folded"] / t["original"]


def generation_split(shared: nn.Module, repeats: int) -> tuple[float, float]:
    """Median seconds of generating every weight, and of back-propagating into the store."""
    groups = list(shared.ssnfx.children())
    weights = [w for g in groups for w in g()]
    grads = [torch.randn_like(w) for w in weights]

    def forward() -> None:
        for g in groups:
            g()

    def both() -> None:
        torch.autograd.backward([w for g in groups for w in g()], grads)

    t = interleaved({"forward": forward, "both": both}, repeats)
    return t["forward"], t["both"] - t["forward"]


def _short_cases(quick: bool) -> dict[str, tuple[Callable[[], nn.Module], torch.Tensor]]:
    """The mobile networks of the short-steps table, at batch 32 and 96 px."""
    if quick:
        return {"mobilenet_v3_small, batch 4, 32 px": (
            lambda: torchvision.models.mobilenet_v3_small(num_classes=10),
            torch.randn(4, 3, 32, 32))}
    x = torch.randn(32, 3, 96, 96)

    def timm_model(name: str) -> nn.Module:
        import timm

        return timm.create_model(name, num_classes=10)

    return {
        "mobilenet_v3_large": (lambda: torchvision.models.mobilenet_v3_large(num_classes=10), x),
        "ghostnet_100 (timm)": (lambda: timm_model("ghostnet_100"), x),
        "efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(num_classes=10), x),
        "regnet_y_400mf": (lambda: torchvision.models.regnet_y_400mf(num_classes=10), x),
    }


class _Generation:
    """Generating every weight of a shared model and back-propagating random gradients into the
    store, timed apart (forward, backward) each call: a contestant in the interleaved rounds, so
    that its times are taken beside the steps they are compared with."""

    def __init__(self, shared: nn.Module) -> None:
        self.groups = list(shared.ssnfx.children())
        self.grads = [torch.randn_like(w) for g in self.groups for w in g()]
        self.forward: list[float] = []
        self.backward: list[float] = []

    def __call__(self) -> None:
        start = time.perf_counter()
        weights = [w for g in self.groups for w in g()]
        mid = time.perf_counter()
        torch.autograd.backward(weights, self.grads)
        self.forward.append(mid - start)
        self.backward.append(time.perf_counter() - mid)
        for g in self.groups:
            g.zero_grad(set_to_none=True)


def short_steps(quick: bool, rounds: int) -> str:
    """The short-steps table: mobile networks, where a step is short and ssnfx's fixed per-step
    work weighs most. SGD with momentum; per network, the unshared model, one shared model per
    budget and each shared model's generation alone take turns (order alternating between
    rounds); a ratio is the median of the per-round ratios, generation's share the median of its
    per-round share of its model's step."""
    lines = ["| network | budget | parameters | step ms | step vs unshared | generation ms "
             "(fwd + bwd) | generation share of the step |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for label, (make, x) in _short_cases(quick).items():
        torch.manual_seed(0)
        y = torch.randint(0, 10, (x.shape[0],))
        models = {"unshared": make()}
        total = sum(p.numel() for p in models["unshared"].parameters())
        for b in BUDGETS:
            try:
                models[f"{b:.0%}"] = ssnfx.share(make(), b)
            except ssnfx.BudgetError as e:  # below the private parameters: take the least
                least = int(str(e).split("shared with: ")[-1].split(" (")[0].replace(",", ""))
                models[f"{least / total:.2%} (least; {b:.0%} refused)"] = \
                    ssnfx.share(make(), least)
        fns: dict[str, Callable[[], None]] = {}
        gens = {}
        for name, model in models.items():
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            fns[name] = lambda m=model, o=opt: _step(m, o, x, y)
            if name != "unshared":
                gens[name] = fns[f"generation {name}"] = _Generation(model)
        times, ratios, per_round = interleaved_ratios(fns, rounds, "unshared", keep=True)
        for name, model in models.items():
            n = sum(p.numel() for p in model.parameters())
            cells = ("", "")
            if name in gens:
                gen, steps = gens[name], per_round[name]
                fwd, bwd = gen.forward[-len(steps):], gen.backward[-len(steps):]
                share = statistics.median((f + b) / t for f, b, t in zip(fwd, bwd, steps))
                cells = (f"{statistics.median(fwd) * 1e3:.1f} + "
                         f"{statistics.median(bwd) * 1e3:.1f}", f"{share:.1%}")
            lines.append(f"| {label} | {name} | {n:,} | {times[name] * 1e3:.0f} | "
                         f"{ratios[name]:.3f}x | {cells[0]} | {cells[1]} |")
        print("\n".join(lines[-len(models):]), flush=True)
    return "\n".join(lines)


def top_ops(shared: nn.Module, x: torch.Tensor, rows: int = 10) -> str:
    """The operators that take a shared training step's time (self CPU time)."""
    y = torch.randint(0, 10, (x.shape[0],))
    opt = torch.optim.Adam(shared.parameters(), lr=1e-4)
    _step(shared, opt, x, y)
    with torch.profiler.profile() as prof:
        _step(shared, opt, x, y)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    lines = ["| operator | calls | self CPU ms | share |", "|---|---:|---:|---:|"]
    for e in events[:rows]:
        lines.append(f"| `{e.key}` | {e.count} | {e.self_cpu_time_total / 1e3:.1f} | "
                     f"{e.self_cpu_time_total / total:.1%} |")
    return "\n".join(lines)


def _plot(curves: dict[str, dict[float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in curves.items():
        ax.plot([b * 100 for b in points], list(points.values()), marker="o", label=label)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.axhline(1.05, color="grey", linewidth=1, linestyle=":", label="CNN target 1.05x")
    ax.set_xscale("log")
    ax.set_xlabel("budget (% of the model's parameters)")
    ax.set_ylabel("training step time / unshared")
    ax.set_title("Step-time ratio of the shared model (Adam, same batch)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _main_cases(args: argparse.Namespace
                ) -> dict[str, tuple[Callable[[], nn.Module], torch.Tensor]]:
    """The main table's networks and inputs: WRN-16-4 and vit_b_16 (a tiny WRN when quick)."""
    if args.quick:
        return {"WRN-16-1, batch 8": (lambda: WideResNet(16, 1), torch.randn(8, 3, 32, 32))}
    return {
        "WRN-16-4, batch 128": (lambda: WideResNet(16, 4), torch.randn(128, 3, 32, 32)),
        f"vit_b_16, batch {args.vit_batch}": (
            lambda: torchvision.models.vit_b_16(num_classes=10),
            torch.randn(args.vit_batch, 3, 224, 224)),
    }


def main_table(args: argparse.Namespace) -> str:
    """The WRN-16-4 and vit_b_16 table (Adam), inference and the profile."""
    cases = _main_cases(args)
    lines = ["| model | budget | parameters | step ms | step vs unshared |",
             "|---|---:|---:|---:|---:|"]
    curves: dict[str, dict[float, float]] = {}
    notes = []
    for label, (make, x) in cases.items():
        times, ratios, models = training_ratios(make, x, BUDGETS, args.repeats)
        curves[label] = {}
        for name, seconds in times.items():
            n = sum(p.numel() for p in models[name].parameters())
            lines.append(f"| {label} | {name} | {n:,} | {seconds * 1e3:.0f} | "
                         f"{ratios[name]:.2f}x |")
            if name != "unshared":
                curves[label][float(name.rstrip("%")) / 100] = ratios[name]
        print("\n".join(lines[-len(times):]), flush=True)
        inf = inference_ratio(models["unshared"], models["10%"], x, args.repeats)
        notes.append(f"- {label}: inference of the folded model (10% budget) over the original: "
                     f"{inf:.2f}x (median of interleaved no_grad forwards, eval mode).")
        last = (label, models, x, times)
    label, models, x, times = last
    fwd, bwd = generation_split(models["10%"], args.repeats)
    step = times["10%"]
    trained = {k: sum(p.numel() for p in models[k].parameters()) for k in ("10%", "unshared")}
    notes.append(
        f"- Where the {label} step at 10% goes: generating every weight "
        f"{fwd * 1e3:.0f} ms forward + {bwd * 1e3:.0f} ms backward into the store "
        f"({(fwd + bwd) / step:.0%} of the {step * 1e3:.0f} ms step); the rest is the model's "
        f"own compute and the optimizer, which updates {trained['10%']:,} parameters instead "
        f"of {trained['unshared']:,}.")
    body = "\n".join([*lines, "", *notes, "",
                      f"Top operators of one shared {label} training step at 10% "
                      f"(torch.profiler, self CPU time):", "", top_ops(models["10%"], x), "",
                      f"Adam (lr 1e-4), cross-entropy on random labels; 'step ms' is the median "
                      f"of {args.repeats} interleaved steps after 2 warm-up steps each (order "
                      f"alternating between rounds), 'step vs unshared' the median of the "
                      f"per-round ratios."])
    if not args.quick and args.only is None:
        _plot(curves, RESULTS / "speed.png")
    return body


def generation_modes(args: argparse.Namespace) -> str:
    """The generation modes (batched, auto, just in time) against the unshared step, at 10%
    and 100%, all models of a network interleaved in one process: the main table's networks
    with Adam, the short-steps table's with SGD (momentum 0.9)."""
    cases = {**{k: (*v, "adam") for k, v in _main_cases(args).items()},
             **{k: (*v, "sgd") for k, v in _short_cases(args.quick).items()}}
    lines = ["| model | budget | generation | step ms | step vs unshared |",
             "|---|---:|---|---:|---:|"]
    for label, (make, x, optimizer) in cases.items():
        torch.manual_seed(0)
        y = torch.randint(0, 10, (x.shape[0],))
        models = {("unshared", ""): make()}
        for b in (0.1, 1.0):
            for mode in GENERATIONS:
                models[(f"{b:.0%}", mode)] = ssnfx.share(
                    make(), b, ssnfx.ShareConfig(generation=mode))
        fns = {}
        for key, model in models.items():
            opt = torch.optim.Adam(model.train().parameters(), lr=1e-4) if optimizer == "adam" \
                else torch.optim.SGD(model.train().parameters(), lr=0.01, momentum=0.9)
            fns[key] = lambda m=model, o=opt: _step(m, o, x, y)
        times, ratios = interleaved_ratios(fns, args.repeats, ("unshared", ""))
        for (budget, mode), seconds in times.items():
            lines.append(f"| {label} | {budget} | {mode} | {seconds * 1e3:.0f} | "
                         f"{ratios[(budget, mode)]:.2f}x |")
        print("\n".join(lines[-len(times):]), flush=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny models for the tests")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--rounds", type=int, default=31,
                        help="interleaved rounds of the short-steps table")
    parser.add_argument("--vit-batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("main", "short", "generation"), default=None,
                        help="run one table and print it (results/speed.md is written only by "
                             "a run of both)")
    parser.add_argument("--retain-freed-memory", action="store_true",
                        help="keep freed CPU memory for reuse (ssnfx.cpu_memory) in this process")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.retain_freed_memory and not retain_freed_memory():
        raise SystemExit("error: --retain-freed-memory needs glibc (Linux)")
    if args.quick:
        args.repeats, args.rounds = 2, 2
    if args.only == "generation":  # printed only: results/speed.md records it by hand
        body = generation_modes(args)
        print(body)
        return body
    parts = []
    if args.only != "short":
        parts.append(main_table(args))
    if args.only != "main":
        parts.append("\n".join([
            "### Short steps: mobile networks",
            "",
            "Where a step is short, ssnfx's fixed per-step work weighs most. SGD (momentum 0.9), "
            "cross-entropy on random labels, batch 32 at 96x96; each network's unshared and "
            "shared models step in turn, in an order that alternates between rounds, and 'step "
            f"vs unshared' is the median of {args.rounds} per-round ratios (after 2 warm-up "
            "rounds); 'step ms' is the median step. Generation is the forward and backward of "
            f"the generators alone (medians of {args.rounds} interleaved calls); its share is "
            "of the shared model's step.",
            "",
            short_steps(args.quick, args.rounds)]))
    body = "\n\n".join(parts)
    if not args.quick and args.only is None:
        body += "\n\n![step-time ratio vs budget](results/speed.png)"
        write("speed", "Training and inference speed: shared vs unshared", body,
              "python benchmarks/bench_speed.py")
    print(body)
    return body


if __name__ == "__main__":
    main()
