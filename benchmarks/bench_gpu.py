"""Training on a CUDA GPU, shared against unshared in the same process: step time in bf16
autocast, and the peak memory of an fp32 Adam step.

Step time: resnet50 (batch 64, 224 px) and vit_b_16 (batch 32, 224 px), each unshared and shared
at 1%, 10% and 100% (and just in time, ``ShareConfig(generation="jit")``, at 10% and 100%); a
step is zero_grad, forward and cross-entropy under
``torch.autocast("cuda", torch.bfloat16)``, backward and an AdamW step (the parameters stay
fp32). The models step in turn, in an order that alternates between rounds, each step timed
between two ``torch.cuda.synchronize()``; after warm-up rounds, a ratio is the median of the
per-round ratios to the unshared step (steps a fraction of a second apart share the GPU's clock
and thermal state).

Memory: vit_b_16 (batch 8) and vit_l_16 (batch 2), fp32, unshared and at 10% and 1%, batched and
just in time. Each model
is built on the CPU (shared there, dropping the original) and moved to the GPU only after the
previous one was freed and the allocator emptied; one Adam step creates the optimizer state,
then ``torch.cuda.reset_peak_memory_stats()`` and a second step: its peak is
``torch.cuda.max_memory_allocated()`` above what was allocated before the model was built.

    python benchmarks/bench_gpu.py [--quick] [--rounds 31] [--json FILE]
    python benchmarks/bench_gpu.py --publish   # copy results/gpu.md into RESULTS.md (no GPU)

``benchmarks/gpu_check.sh`` runs it, with the CUDA tests, on a GPU machine.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import ssnfx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write  # noqa: E402

GiB = 2 ** 30
BUDGETS = [0.01, 0.1, 1.0]
MEMORY_BUDGETS = [0.1, 0.01]
#: Budgets also timed with just-in-time generation (ShareConfig(generation="jit")).
JIT_BUDGETS = [0.1, 1.0]
TITLE = "GPU: training step time (bf16 autocast) and Adam memory, shared vs unshared"
COMMAND = "bash benchmarks/gpu_check.sh"
RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"


def _tiny_vit() -> nn.Module:
    """A two-block torchvision ViT for --quick runs (32 px, 16 patches)."""
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                                num_heads=2, hidden_dim=32, mlp_dim=64,
                                                num_classes=10)


def make_model(name: str) -> nn.Module:
    """A torchvision classifier with 10 classes (as the CPU benchmarks), built on the CPU."""
    if name == "tiny_vit":
        return _tiny_vit()
    return torchvision.models.get_model(name, num_classes=10)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          autocast: torch.dtype | None) -> None:
    opt.zero_grad(set_to_none=True)
    context = torch.autocast(x.device.type, dtype=autocast) if autocast is not None \
        else contextlib.nullcontext()
    with context:
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()


def interleaved_ratios(fns: dict[str, Callable[[], None]], rounds: int, base: str, warmup: int,
                       device: torch.device) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds of each function and the median of its per-round ratio to ``base``.

    Each round calls every function once, forward then reversed order in alternate rounds, so
    that a drift (clocks, temperature, another process) hits all alike. Each call is timed
    between two synchronisations: the GPU's queue is empty when it starts and when it ends.
    """
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    _sync(device)
    for i in range(warmup + rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    ratios = {k: statistics.median(t / b for t, b in zip(v, times[base]))
              for k, v in times.items()}
    return {k: statistics.median(v) for k, v in times.items()}, ratios


def _share(model: nn.Module, budget: float, generation: str = "batched"
           ) -> tuple[str, nn.Module]:
    """``(label, shared)``; a budget below the private parameters takes the least one, saying so
    in the label (as bench_speed's short-steps table does)."""
    config = ssnfx.ShareConfig(generation=generation)
    mode = "" if generation == "batched" else f", {generation}"
    try:
        return f"{budget:.0%}{mode}", ssnfx.share(model, budget, config)
    except ssnfx.BudgetError as e:
        least = int(str(e).split("shared with: ")[-1].split(" (")[0].replace(",", ""))
        total = sum(p.numel() for p in model.parameters())
        return (f"{least / total:.2%} (least; {budget:.0%} refused){mode}",
                ssnfx.share(model, least, config))


def step_times(name: str, batch: int, size: int, budgets: list[float], rounds: int,
               warmup: int, device: torch.device) -> list[dict[str, Any]]:
    """Step time of the unshared model and of one shared model per budget, all on ``device``,
    bf16 autocast, AdamW; one record per model."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    models = {"unshared": make_model(name).to(device)}
    for b, generation in [*((b, "batched") for b in budgets),
                          *((b, "jit") for b in JIT_BUDGETS)]:
        # Shared on the device: the store is created there, as a user's model on a GPU gets it.
        label, shared = _share(make_model(name).to(device), b, generation)
        models[label] = shared
    fns = {}
    for label, model in models.items():
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        fns[label] = lambda m=model, o=opt: _step(m, o, x, y, torch.bfloat16)
    times, ratios = interleaved_ratios(fns, rounds, "unshared", warmup, device)
    records = [{"kind": "step", "model": name, "batch": batch, "size": size, "budget": label,
                "params": sum(p.numel() for p in models[label].parameters()),
                "step_ms": times[label] * 1e3, "ratio": ratios[label], "rounds": rounds}
               for label in models]
    del models, fns
    _free(device)
    return records


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _warm_up(device: torch.device) -> None:
    """One matmul forward and backward, so that cuBLAS's workspace (kept for the process) is
    allocated before the first memory measurement and counted in no model's figures."""
    a = torch.randn(256, 256, device=device, requires_grad=True)
    (a @ a).sum().backward()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        (a @ a).float().sum().backward()
    _sync(device)
    del a
    _free(device)


def peak_memory(name: str, budget: float | None, batch: int, size: int,
                device: torch.device, generation: str = "batched") -> dict[str, Any]:
    """Peak memory of a steady-state fp32 Adam step (see the module docstring); NaN figures on
    a device without CUDA's allocator statistics (the hidden CPU smoke run)."""
    cuda = device.type == "cuda"
    _free(device)
    base = torch.cuda.memory_allocated(device) if cuda else 0
    torch.manual_seed(0)
    model = make_model(name)
    original = sum(p.numel() for p in model.parameters())
    generated, label = 0, "unshared"
    if budget is not None:
        label, shared = _share(model, budget, generation)
        generated = sum(s.numel for s in shared.ssnfx.plan.slots if s.shared)
        del model
        model = shared
    gc.collect()
    model.to(device).train()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    _step(model, opt, x, y, None)  # creates Adam's moments
    opt.zero_grad(set_to_none=True)
    _sync(device)
    gc.collect()
    nan = float("nan")
    rest = (torch.cuda.memory_allocated(device) - base) / GiB if cuda else nan
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    _step(model, opt, x, y, None)
    _sync(device)
    peak = (torch.cuda.max_memory_allocated(device) - base) / GiB if cuda else nan
    del model, opt, x, y
    _free(device)
    return {"kind": "memory", "model": name, "batch": batch, "size": size, "budget": label,
            "original_params": original, "params": params, "state_gib": 16 * params / GiB,
            "generated_gib": 4 * generated / GiB, "rest_gib": rest, "peak_gib": peak}


def _gpu_line(device: torch.device) -> str:
    if device.type != "cuda":
        return f"Device: {device} (a smoke run of the code path; no GPU figures)."
    props = torch.cuda.get_device_properties(device)
    return (f"GPU: {torch.cuda.get_device_name(device)}, {props.total_memory / GiB:.0f} GiB, "
            f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, torch "
            f"{torch.__version__}, torchvision {torchvision.__version__}.")


def _fmt(value: float, spec: str) -> str:
    return "n/a" if value != value else format(value, spec)  # NaN: not measured here


def step_table(records: list[dict[str, Any]], rounds: int, warmup: int) -> str:
    lines = ["| model | batch | budget | parameters | step ms | step vs unshared |",
             "|---|---:|---|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['model']}, {r['size']} px | {r['batch']} | {r['budget']} | "
                     f"{r['params']:,} | {r['step_ms']:.1f} | {r['ratio']:.3f}x |")
    return "\n".join([
        *lines, "",
        f"bf16 autocast (parameters, gradients and AdamW state fp32), AdamW (lr 1e-4, PyTorch's "
        f"default foreach implementation), cross-entropy on random labels, "
        f"cuDNN benchmark off, TF32 at PyTorch's defaults. 'step ms' is the median step; "
        f"'step vs unshared' the median of {rounds} per-round ratios, the models stepping in "
        f"turn (order alternating) after {warmup} warm-up rounds, each step between two "
        f"torch.cuda.synchronize()."])


def memory_table(records: list[dict[str, Any]]) -> str:
    lines = ["| model | batch | budget | parameters | params + grads + Adam GiB | generated "
             "weights GiB | allocated between steps GiB | peak of a step GiB | peak vs "
             "unshared |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    base: dict[str, float] = {}
    for r in records:
        base.setdefault(r["model"], r["peak_gib"])
        lines.append(f"| {r['model']} | {r['batch']} | {r['budget']} | {r['params']:,} | "
                     f"{r['state_gib']:.3f} | {r['generated_gib']:.3f} | "
                     f"{_fmt(r['rest_gib'], '.3f')} | {_fmt(r['peak_gib'], '.3f')} | "
                     f"{_fmt(r['peak_gib'] / base[r['model']], '.2f')} |")
    return "\n".join([
        *lines, "",
        "fp32, Adam (lr 1e-4), zero_grad(set_to_none=True). 'peak of a step' is "
        "torch.cuda.max_memory_allocated() over a steady-state step (the second), above what "
        "was allocated before the model was built; each model built on the CPU, shared there "
        "and moved to the GPU after the previous one was freed. 'params + grads + Adam' is 16 "
        "bytes per trainable parameter; 'allocated between steps' is measured (parameters, "
        "buffers, Adam's moments); 'generated weights' is the fp32 size of the weights the "
        "stores generate each step (they and their gradients exist only during the step)."])


def publish(section: str, results: Path = RESULTS_MD) -> None:
    """Put ``section`` (a markdown section starting ``## GPU``) into RESULTS.md, replacing the
    GPU section there (up to the next ``## `` heading) or appending it."""
    text = results.read_text()
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("## GPU")), None)
    new = section.rstrip("\n").splitlines()
    if start is None:
        lines = [*lines, "", *new] if lines and lines[-1] else [*lines, *new]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        tail = ["", *lines[end:]] if end < len(lines) else []
        lines = [*lines[:start], *new, *tail]
    results.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny models, one round: a smoke run of the script")
    parser.add_argument("--rounds", type=int, default=31, help="interleaved timed rounds")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--publish", action="store_true",
                        help="copy results/gpu.md into RESULTS.md's GPU section and exit")
    # Hidden: run the same code path on the CPU (no memory figures) to check it without a GPU.
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.publish:
        publish((RESULTS / "gpu.md").read_text())
        return ""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: bench_gpu.py needs a CUDA GPU (torch.cuda.is_available() is "
                         "False); run benchmarks/gpu_check.sh on a GPU machine")
    if args.quick:
        args.rounds, args.warmup = 1, 1
        speed = [("resnet18", 4, 32), ("tiny_vit", 4, 32)]
        memory = [("tiny_vit", 2, 32)]
        mem_budgets = [0.1]
    else:
        speed = [("resnet50", 64, 224), ("vit_b_16", 32, 224)]
        memory = [("vit_b_16", 8, 224), ("vit_l_16", 2, 224)]
        mem_budgets = MEMORY_BUDGETS
    print(_gpu_line(device), flush=True)
    _warm_up(device)

    # Memory first, while nothing else of this process is on the GPU.
    mem_records = []
    for name, batch, size in memory:
        for budget, generation in [(None, "batched"), *((b, g) for b in mem_budgets
                                                        for g in ("batched", "jit"))]:
            mem_records.append(peak_memory(name, budget, batch, size, device, generation))
            print(json.dumps(mem_records[-1]), flush=True)
    step_records = []
    for name, batch, size in speed:
        step_records += step_times(name, batch, size, BUDGETS, args.rounds, args.warmup, device)
        for r in step_records[-1 - len(BUDGETS) - len(JIT_BUDGETS):]:
            print(json.dumps(r), flush=True)

    body = "\n".join([
        _gpu_line(device), "",
        "### Step time: bf16 autocast, shared vs unshared", "",
        step_table(step_records, args.rounds, args.warmup), "",
        "### Peak memory of an Adam step (fp32), shared vs unshared", "",
        memory_table(mem_records)])
    if args.json is not None:
        args.json.write_text(json.dumps({"gpu": _gpu_line(device), "step": step_records,
                                         "memory": mem_records}, indent=1) + "\n")
    if not args.quick and device.type == "cuda":
        path = write("gpu", TITLE, body, COMMAND)
        publish(path.read_text())
    print(body)
    return body


if __name__ == "__main__":
    main()
