"""Rebuild ``fashion_mnist_sample.npz`` from the full Fashion-MNIST (see README.md beside it).

    python tests/data/make_fashion_mnist_sample.py [ROOT]

ROOT is any folder :func:`ssnfx.data.fashion_mnist_source` accepts (default: Debian's). The
sample is the first 200 training and first 100 test images of each class, in the files' order,
so that it is stratified and the same on every machine.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ssnfx.data import fashion_mnist_arrays

OUT = Path(__file__).resolve().parent / "fashion_mnist_sample.npz"
PER_CLASS = {"train": 200, "test": 100}


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` examples of every class, in their original order.

    Example:
        >>> first_per_class(np.array([0, 0, 1, 0, 1, 1]), 2).tolist()
        [0, 1, 2, 4]
    """
    seen = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    keep = []
    for i, label in enumerate(labels):
        if seen[label] < per_class:
            keep.append(i)
            seen[label] += 1
    return np.array(keep, dtype=np.uint16)


def main(root: str | None = None) -> Path:
    full = fashion_mnist_arrays(root)
    arrays = {}
    for split, per_class in PER_CLASS.items():
        index = first_per_class(full[f"y_{split}"], per_class)
        for kind in ("x", "y"):
            arrays[f"{kind}_{split}"] = full[f"{kind}_{split}"][index]
        arrays[f"{split}_index"] = index  # where each image sits in the full files
    np.savez_compressed(OUT, **arrays)
    return OUT


if __name__ == "__main__":
    path = main(sys.argv[1] if len(sys.argv) > 1 else None)
    print(f"{path}: {path.stat().st_size:,} bytes")
