"""Memory of training with Adam, shared against unshared, and the size of checkpoints.

Each configuration runs in a fresh process: build the model (and share it, dropping the
original), take one Adam step so that gradients and optimizer state exist, reset the kernel's
peak-RSS counter, take one more step, and read the peak. Reported: that peak above the
interpreter's own footprint (torch imported, no model), and what the parameters, their
gradients and Adam's two moments account for; the rest is activations and, for the shared
model, the generated weights and their gradients, which live only during the step.

    python benchmarks/bench_memory.py [--quick] [--generation batched jit auto]
        [--allocator default|returning|both] [--models vit_b_16 timm:convnext_tiny ...]
        [--budgets 0.1 0.01]

A model named ``timm:<name>`` is timm's (swin and ConvNeXt, at batch 2), any other
torchvision's (vit_b_16 at batch 8, vit_l_16 at batch 2).

``returning``: each process first calls :func:`ssnfx.cpu_memory.return_freed_memory` (blocks of
1 MiB and more mapped on their own and unmapped on free), so that its resident memory follows
what is alive; glibc's default keeps much of what a step frees in its heap.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

import ssnfx
from ssnfx.core.jit import GENERATIONS
from ssnfx.cpu_memory import return_freed_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write  # noqa: E402

MiB = 2 ** 20


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def measure(name: str, budget: float | None, batch: int, size: int,
            generation: str = "batched", allocator: str = "default") -> dict[str, float]:
    """Peak memory of one training step (run in a fresh process: see :func:`main`)."""
    if allocator == "returning":
        return_freed_memory()
    torch.manual_seed(0)
    base = _rss_kib("VmRSS")
    model = _model(name)
    generated = 0
    if budget is not None:
        shared = ssnfx.share(model, budget, ssnfx.ShareConfig(generation=generation))
        generated = sum(s.numel for s in shared.ssnfx.plan.slots if s.shared)
        del model
        model = shared
    gc.collect()
    params = sum(p.numel() for p in model.parameters())
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    if generation == "activations":
        # The floor's other part: what the backward of a training step saves. The parameters
        # keep requires_grad (frozen ones would save less: a linear layer saves its input only
        # for its weight's gradient), and each gradient is dropped as it arrives, so that
        # nothing but the activations (and one gradient at a time) adds to what stays.
        for p in model.parameters():
            p.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None))
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    opt.zero_grad(set_to_none=True)
    gc.collect()
    # glibc keeps freed memory (the original model's weights, the first step's temporaries)
    # resident; hand it back so that the RSS counts only what is alive.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    rest = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS counter (VmHWM) to the current RSS
    step()
    return {"peak_mib": (_rss_kib("VmHWM") - base) / 1024, "rest_mib": (rest - base) / 1024,
            "params": params, "state_mib": 4 * 4 * params / MiB,
            "generated_mib": 4 * generated / MiB}


def _model(name: str) -> torch.nn.Module:
    if name.startswith("timm:"):
        import timm

        return timm.create_model(name.removeprefix("timm:"), num_classes=10)
    return torchvision.models.get_model(name, num_classes=10)


#: The models measured (name, batch, image size) unless --models names some.
CONFIGS = [("vit_b_16", 8, 224), ("vit_l_16", 2, 224),
           ("timm:swin_tiny_patch4_window7_224", 2, 224), ("timm:convnext_tiny", 2, 224)]


def checkpoint_sizes(name: str, budgets: list[float]) -> list[str]:
    model = torchvision.models.get_model(name, num_classes=10)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    original = buf.tell()
    rows = [f"| {name} | unshared state_dict | {original / MiB:.1f} | 1.00 |"]
    for b in budgets:
        path = Path(f"/tmp/ssnfx-bench-{os.getpid()}.pt")
        ssnfx.save(ssnfx.share(model, b), path)
        size = path.stat().st_size
        path.unlink()
        rows.append(f"| {name} | ssnfx.save at {b:.0%} | {size / MiB:.1f} | "
                    f"{size / original:.3f} |")
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small model for the tests")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--generation", choices=GENERATIONS, nargs="+",
                        default=list(GENERATIONS),
                        help="the shared models' generation mode(s) (ShareConfig.generation)")
    parser.add_argument("--models", nargs="+", help="of CONFIGS, by name (default: all)")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.1, 0.01])
    parser.add_argument("--allocator", choices=("default", "returning", "both"), default="both",
                        help="glibc as it is, or after ssnfx.cpu_memory.return_freed_memory()")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return ""
    generations = tuple(args.generation)
    allocators = ("default", "returning") if args.allocator == "both" else (args.allocator,)
    if args.quick:
        configs, budgets, ckpt = [("resnet18", 2, 64)], [0.1], ["resnet18"]
    else:
        configs = [c for c in CONFIGS if not args.models or c[0] in args.models]
        budgets, ckpt = args.budgets, ["resnet50", "vit_b_16"]
    lines = ["| model | batch | allocator | budget | generation | parameters | Adam state "
             "(p+g+m+v) MiB | generated weights MiB | resident between steps MiB | peak of a "
             "step MiB | peak vs unshared |",
             "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|"]
    floors = []
    runs = [(None, "batched"), *((b, g) for b in budgets for g in generations),
            (None, "activations")]
    for allocator in allocators:
        for name, batch, size in configs:
            base = state = activations = runtime = 0.0
            for budget, generation in runs:
                spec = json.dumps([name, budget, batch, size, generation, allocator])
                out = subprocess.run([sys.executable, __file__, "--child", spec], check=True,
                                     capture_output=True, text=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                if budget is None and generation == "batched":
                    base, state = r["peak_mib"], r["state_mib"]
                    # What stays between steps besides the parameters and Adam's moments (12
                    # of the state's 16 bytes a parameter): torch's own, the model's buffers.
                    runtime = max(0.0, r["rest_mib"] - 0.75 * state)
                if generation == "activations":
                    activations = r["peak_mib"] - r["rest_mib"]
                    continue
                lines.append(f"| {name} | {batch} | {allocator} | "
                             f"{'unshared' if budget is None else f'{budget:.0%}'} | "
                             f"{'' if budget is None else generation} | {r['params']:,} | "
                             f"{r['state_mib']:.0f} | {r['generated_mib']:.0f} | "
                             f"{r['rest_mib']:.0f} | {r['peak_mib']:.0f} | "
                             f"{r['peak_mib'] / base:.2f} |")
                print(lines[-1], flush=True)
            floors.append(
                f"- {name}, {allocator} allocator: its activations (the peak of a forward and "
                f"backward of the unshared model whose parameter gradients are dropped as they "
                f"arrive, above what it holds between steps) are {activations:.0f} MiB and what "
                f"it holds between steps besides its parameters and Adam's moments (torch's "
                f"own memory, buffers) {runtime:.0f} MiB, so the physical floor of a step at "
                f"budget b is about b x its Adam state + {activations + runtime:.0f} MiB: "
                + ", ".join(f"{(b * state + activations + runtime) / base:.2f}x of unshared at "
                            f"{b:.0%}" for b in budgets) + ".")
    sizes = ["| model | file | MiB | vs unshared |", "|---|---|---:|---:|"]
    for name in ckpt:
        sizes += checkpoint_sizes(name, [1.0, *budgets])
    body = "\n".join([*lines, "", "Peak RSS of one steady-state training step (Adam, "
                      "zero_grad(set_to_none=True)) above the interpreter with torch imported, "
                      "and the RSS between steps (parameters and Adam's moments), "
                      "each configuration in a fresh process. 'Adam state' is 16 bytes per "
                      "trainable parameter (value, gradient, two moments); 'generated weights' "
                      "is the fp32 size of the weights the store generates each step. In the "
                      "batched mode they and their gradients all exist during the step; in the "
                      "just-in-time mode (ShareConfig(generation='jit'), ssnfx.core.jit) each is "
                      "made before its layer and again in backward, and freed after; 'auto' "
                      "makes the weights of at least ssnfx.core.jit.JIT_NUMEL elements just in "
                      "time and batches the others. The 'returning' "
                      "allocator is glibc after ssnfx.cpu_memory.return_freed_memory(): blocks "
                      "of 1 MiB and more are mapped on their own and unmapped when freed, so the "
                      "resident memory follows what is alive; by default glibc raises that "
                      "threshold after large frees (up to 32 MiB) and keeps freed blocks below it "
                      "in its heap.", "",
                      *floors, "",
                      "Checkpoint size (the plan plus the shared state_dict, against the "
                      "unshared state_dict):", "", *sizes])
    if not args.quick:
        write("memory", "Memory: training with Adam, and checkpoint size", body,
              " ".join(["python benchmarks/bench_memory.py",
                        *(sys.argv[1:] if argv is None else argv)]))
    print(body)
    return body


if __name__ == "__main__":
    main()
