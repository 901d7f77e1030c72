"""More parameters in training than at deployment (SSN Sec. 4.6) on Fashion-MNIST: a small
ResNetFM student shared at a budget of 4.0 (four times its own parameters, folded back to its own
size for deployment) against the same student trained plainly, each with and without a teacher's
soft targets (Hinton et al.'s distillation loss).

    python benchmarks/bench_distill.py [--quick] [--epochs 3] [--seeds 2] [--limit 20000]
        [--student 8] [--teacher 32] [--budget 4.0] [--temperature 4] [--alpha 0.9] [--threads 1]

Two shared variants: one store for all layers (ssnfx's default) and one group per layer, the
paper's set-up (each layer draws only on its own, larger store). The teacher is trained once
(seed 0) with the same epochs and schedule; every student row uses it. The defaults take about
45 minutes on one thread of this project's 2-core machine.
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
from torch.utils.data import DataLoader, TensorDataset

import ssnfx
from ssnfx.distill import DistillationLoss
from ssnfx.training import accuracy, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_note, fashion_data, fashion_loaders, mean_std, write  # noqa: E402
from networks import ResNetFM  # noqa: E402

LR = 3e-3


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class SoftTargets:
    """Batches ``(x, (y, teacher_logits))`` from a loader over ``(x, y, logits)``: the teacher's
    logits computed once for the whole training set (what ``ssnfx.distill.with_teacher`` gives
    batch by batch; equal here, since the data has no augmentation)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Any:
        for x, y, t in self.loader:
            yield x, (y, t)

    def __len__(self) -> int:
        return len(self.loader)


@torch.no_grad()
def with_soft_targets(teacher: torch.nn.Module, loader: DataLoader, seed: int) -> SoftTargets:
    teacher.eval()
    x, y = loader.dataset.tensors
    logits = torch.cat([teacher(x[i:i + 1024]) for i in range(0, len(x), 1024)])
    # The same shuffling as the plain loader of this seed: the rows differ only in the loss.
    return SoftTargets(DataLoader(TensorDataset(x, y, logits), batch_size=loader.batch_size,
                                  shuffle=True, generator=torch.Generator().manual_seed(seed)))


def student(kind: str, width: int, budget: float, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = ResNetFM(width)
    if kind == "plain":
        return model
    config = ssnfx.ShareConfig(seed=seed)
    if kind == "one store":
        return ssnfx.share(model, budget, config)
    gm = ssnfx.trace(model)  # one group per layer (SSN Sec. 4.6)
    layers = [[s.name] for s in ssnfx.make_plan(gm, budget, config).slots if s.shared]
    return ssnfx.rewrite(gm, ssnfx.make_plan(gm, budget, config, groups=layers))


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny run for the tests")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--limit", type=int, default=20000, help="training images (0: all)")
    parser.add_argument("--student", type=int, default=8, help="student ResNetFM width")
    parser.add_argument("--teacher", type=int, default=32, help="teacher ResNetFM width")
    parser.add_argument("--budget", type=float, default=4.0)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.seeds, args.limit, args.student, args.teacher = 1, 1, 512, 4, 8
    torch.set_num_threads(args.threads)
    limit = args.limit or None
    test_limit = 1000 if args.quick else None

    data = fashion_data(args.quick)
    train_loader, test_loader = fashion_loaders(limit, 0, test_limit=test_limit, root=data)
    torch.manual_seed(0)
    teacher = ResNetFM(args.teacher)
    start = time.process_time()
    train(teacher, train_loader, F.cross_entropy, epochs=args.epochs, lr=LR, progress=False)
    teacher_s = time.process_time() - start
    teacher_acc = accuracy(teacher, test_loader)
    print(f"teacher ResNetFM({args.teacher}): {100 * teacher_acc:.2f}", flush=True)

    kd = DistillationLoss(args.temperature, args.alpha)
    rows: dict[tuple[str, bool], dict[str, list[float]]] = {}
    for seed in range(args.seeds):
        train_loader, test_loader = fashion_loaders(limit, seed, test_limit=test_limit,
                                                    root=data)
        soft = with_soft_targets(teacher, train_loader, seed)
        for kind in ("plain", "one store", "one group per layer"):
            for distil in (False, True):
                model = student(kind, args.student, args.budget, seed)
                start = time.process_time()
                train(model, soft if distil else train_loader, kd if distil else F.cross_entropy,
                      epochs=args.epochs, lr=LR, progress=False)
                seconds = time.process_time() - start
                deployed = model if kind == "plain" else ssnfx.fold(model.eval())
                acc = accuracy(deployed, test_loader)
                r = rows.setdefault((kind, distil), {"acc": [], "s": [], "trained": [],
                                                      "deployed": []})
                r["acc"].append(acc)
                r["s"].append(seconds)
                r["trained"].append(params(model))
                r["deployed"].append(params(deployed))
                print(f"seed {seed} {kind}{' + teacher' if distil else ''}: {100 * acc:.2f}",
                      flush=True)

    own = params(ResNetFM(args.student))
    lines = [f"Student ResNetFM({args.student}), {own:,} parameters; teacher "
             f"ResNetFM({args.teacher}), {params(ResNetFM(args.teacher)):,} parameters, "
             f"{100 * teacher_acc:.1f}% test accuracy (seed 0, {teacher_s:.0f} CPU s).", "",
             "| student | teacher | parameters in training | deployed | test accuracy % | "
             "train CPU s |", "|---|:-:|---:|---:|---:|---:|"]
    labels = {"plain": "plain", "one store": f"ssnfx {args.budget:g}x, one store",
              "one group per layer": f"ssnfx {args.budget:g}x, one group per layer"}
    for (kind, distil), r in rows.items():
        lines.append(f"| {labels[kind]} | {'✓' if distil else ''} | "
                     f"{int(statistics.mean(r['trained'])):,} | "
                     f"{int(statistics.mean(r['deployed'])):,} | {mean_std(r['acc'])} | "
                     f"{statistics.mean(r['s']):.0f} |")
    lines += ["", f"{args.seeds} seed(s), mean ± std; {args.epochs} epoch(s) of Adam (lr {LR:g}, "
              f"cosine), batch 128, {'all 60,000' if limit is None else f'the first {limit:,}'} "
              f"training images, {len(test_loader.dataset):,} test images, for the teacher and "
              f"every student. Distillation: `ssnfx.distill.distillation_loss` with T = "
              f"{args.temperature:g}, alpha = {args.alpha:g} (T^2-scaled KL to the teacher's "
              f"softened outputs plus {1 - args.alpha:g} x cross-entropy). Shared students are "
              f"tested folded (`ssnfx.fold`): the deployed model, of the student's own size.",
              "", data_note(data)]
    body = "\n".join(lines)
    if not args.quick:
        command = "nice -n 10 python benchmarks/bench_distill.py " + " ".join(
            argv if argv is not None else sys.argv[1:])
        write("distill", "Over-parameterised students and distillation: Fashion-MNIST", body,
              command.strip())
    print(body)
    return body


if __name__ == "__main__":
    main()
