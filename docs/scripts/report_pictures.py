"""The sharing pictures of the report guide (docs/guides/report.md), at three sizes:

    python docs/scripts/report_pictures.py

* 4 layers: the command line's bundled CNN (examples/digits_cnn.py) at 10%, trained 2 epochs
  on scikit-learn's digits, so that its coefficient similarity is learned;
* 54 layers: torchvision's mobilenet_v3_small at 10% in three depth groups, as built;
* 201 layers: torchvision's densenet201 at 10%, one group, as built.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

import ssnfx
from ssnfx.plot import plot_sharing
from ssnfx.training import train

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "docs" / "assets"


def digits_cnn() -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("digits_cnn", ROOT / "examples" / "digits_cnn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shared = ssnfx.share(module.build_model(), 0.1)
    train(shared, module.train_loader, F.cross_entropy, epochs=2, progress=False)
    return shared


def main() -> None:
    torch.manual_seed(0)
    pictures = {
        "report-digits-cnn.png": digits_cnn,
        "report-mobilenet_v3_small.png": lambda: ssnfx.share(
            torchvision.models.mobilenet_v3_small(), 0.1,
            ssnfx.ShareConfig(strategy="depth", groups=3)),
        "report-densenet201.png": lambda: ssnfx.share(torchvision.models.densenet201(), 0.1),
    }
    for name, build in pictures.items():
        shared = build()
        plot_sharing(shared, ASSETS / name)
        print(f"wrote docs/assets/{name}: {len(shared.ssnfx.plan.slots)} slots", file=sys.stderr)


if __name__ == "__main__":
    main()
