"""Bundled real data for examples, tests and benchmarks; nothing is downloaded.

* :func:`digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images).
* :func:`fashion_mnist`: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package
  (``apt-get install dataset-fashion-mnist``), 60k/10k 28x28 images.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["digits", "fashion_mnist", "FASHION_MNIST_DIR"]

FASHION_MNIST_DIR = Path(os.environ.get("SSNFX_FASHION_MNIST",
                                        "/usr/share/datasets/fashion-mnist"))


def _loaders(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
             y_test: torch.Tensor, batch_size: int, seed: int) -> tuple[DataLoader, DataLoader]:
    gen = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(x_train, y_train), batch_size=batch_size, shuffle=True,
                       generator=gen)
    test = DataLoader(TensorDataset(x_test, y_test), batch_size=512)
    return train, test


def digits(batch_size: int = 64, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Train/test loaders (80/20, stratified by a fixed seed) of sklearn's digits, ``(N,1,8,8)``.

    Example:
        >>> train, test = digits()
        >>> x, y = next(iter(train))
        >>> tuple(x.shape), len(train.dataset), len(test.dataset)
        ((64, 1, 8, 8), 1437, 360)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.2, random_state=seed,
                                           stratify=data.target)
    x = (x - x[idx_train].mean()) / x[idx_train].std()
    return _loaders(x[idx_train], y[idx_train], x[idx_test], y[idx_test], batch_size, seed)


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(batch_size: int = 128, seed: int = 0, root: str | os.PathLike[str] | None = None,
                  limit: int | None = None) -> tuple[DataLoader, DataLoader]:
    """Train/test loaders of Fashion-MNIST, ``(N,1,28,28)`` normalised; ``limit`` keeps the first
    ``limit`` training and ``limit // 6`` test images (for quick runs).

    Raises:
        FileNotFoundError: with the install command, when the Debian package is missing.
    """
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    files = {k: root / f"{k}-idx{3 if 'images' in k else 1}-ubyte.gz"
             for k in ("train-images", "train-labels", "t10k-images", "t10k-labels")}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"Fashion-MNIST not found ({missing[0]}); install it with "
                                f"'apt-get install -y dataset-fashion-mnist' or set "
                                f"SSNFX_FASHION_MNIST to its folder")
    arrays = {k: _idx(p) for k, p in files.items()}
    x_train = torch.tensor(arrays["train-images"], dtype=torch.float32).unsqueeze(1) / 255.0
    x_test = torch.tensor(arrays["t10k-images"], dtype=torch.float32).unsqueeze(1) / 255.0
    y_train = torch.tensor(arrays["train-labels"], dtype=torch.long)
    y_test = torch.tensor(arrays["t10k-labels"], dtype=torch.long)
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
        x_test, y_test = x_test[: max(1, limit // 6)], y_test[: max(1, limit // 6)]
    mean, std = 0.2860, 0.3530  # the training set's statistics
    return _loaders((x_train - mean) / std, y_train, (x_test - mean) / std, y_test, batch_size,
                    seed)
