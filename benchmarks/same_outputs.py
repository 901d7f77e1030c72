"""Check that a refactoring changed nothing: fixed-seed outputs and parameter counts of shared
models, here and at another git revision, compared exactly.

    python benchmarks/same_outputs.py --against 73389eb

For the digits CNN, resnet18 and vit_b_16 at a 10% budget it records, in a fresh process per
revision: the shared model's parameter count, its eval output on a fixed input, the folded
model's output, and one SGD step's loss and output afterwards. The other revision runs from a
git worktree of it (so nothing is installed), with this script's own measuring code.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("digits_cnn", "resnet18", "vit_b_16")


def measure() -> dict[str, Any]:
    """Fixed-seed figures of the ssnfx importable here."""
    import torch
    import torchvision

    import ssnfx

    sys.path.insert(0, str(ROOT / "examples"))
    from digits_cnn import DigitsCNN

    torch.set_num_threads(2)
    makers = {"digits_cnn": (DigitsCNN, (4, 1, 8, 8)),
              "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (2, 3, 64, 64)),
              "vit_b_16": (lambda: torchvision.models.vit_b_16(num_classes=10), (1, 3, 224, 224))}
    out: dict[str, Any] = {}
    for name in MODELS:
        make, shape = makers[name]
        torch.manual_seed(0)
        shared = ssnfx.share(make(), 0.1).eval()
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            y = shared(x)
            folded = ssnfx.fold(shared)(x)
        shared.train()
        loss = shared(x).square().mean()
        loss.backward()
        torch.optim.SGD(shared.parameters(), lr=0.01).step()
        with torch.no_grad():
            after = shared.eval()(x)
        out[name] = {"params": sum(p.numel() for p in shared.parameters()),
                     "output": y.flatten()[:64].tolist(), "folded": folded.flatten()[:64].tolist(),
                     "loss": float(loss), "after_step": after.flatten()[:64].tolist()}
    return out


def run_at(revision: str | None) -> dict[str, Any]:
    """:func:`measure` in a fresh process, on this checkout or on a worktree of ``revision``."""
    with tempfile.TemporaryDirectory() as tmp:
        source = ROOT
        if revision is not None:
            source = Path(tmp) / "tree"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                            str(source), revision], check=True)
            inside = source / "ssnfx" / "passes"
            if (source / "passes").is_dir() and not inside.exists() \
                    and not (source / "ssnfx" / "_checkout.py").exists():
                # A revision whose top-level passes/ only an install maps to ssnfx.passes.
                inside.symlink_to(source / "passes", target_is_directory=True)
        try:
            # This checkout runs as installed (README: pip install -e). Another revision runs
            # from its worktree: an editable install maps ssnfx.passes to this checkout's
            # passes/ whatever PYTHONPATH says, so its finder is dropped there.
            env = {**os.environ, "PYTHONPATH": str(source)} if revision is not None \
                else dict(os.environ)
            drop = ("sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "
                    "'__module__', '').startswith('__editable__')]; " if revision else "")
            code = (f"import json, runpy, sys; {drop}"
                    f"m = runpy.run_path({str(Path(__file__))!r}); "
                    f"print(json.dumps(m['measure']()))")
            done = subprocess.run([sys.executable, "-c", code], cwd=source, env=env,
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"measuring at {revision or 'the working tree'} failed:\n"
                                 f"{done.stderr[-2000:]}")
            return json.loads(done.stdout.strip().splitlines()[-1])
        finally:
            if revision is not None:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(source)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the git revision to compare with")
    args = parser.parse_args()
    here, there = run_at(None), run_at(args.against)
    differ = 0
    for name in MODELS:
        for key, value in here[name].items():
            other = there[name][key]
            same = value == other
            differ += not same
            if key == "params":
                shown = f"{value:,} vs {other:,}"
            else:
                a, b = (v if isinstance(v, list) else [v] for v in (value, other))
                gap = max(abs(u - w) for u, w in zip(a, b))
                scale = max(abs(w) for w in b) or 1.0
                shown = f"{len(a)} value(s), max |diff| {gap:.2e} ({gap / scale:.1e} relative)"
            print(f"{name:<11} {key:<11} {'same' if same else 'DIFFERENT'}  {shown}")
    print(f"{'no differences' if not differ else f'{differ} differences'} against "
          f"{args.against}")
    raise SystemExit(1 if differ else 0)


if __name__ == "__main__":
    main()
