"""Real data for examples, tests and benchmarks; nothing is downloaded.

* :func:`digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images).
* :func:`fashion_mnist`: Fashion-MNIST, 60k/10k 28x28 images, from a folder of its four idx files
  (Debian's ``dataset-fashion-mnist`` package, or a root that torchvision's
  ``FashionMNIST(root, download=True)`` filled), or from a ``.npz`` of the same arrays (the
  tests' committed sample, ``tests/data/fashion_mnist_sample.npz``).
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["digits", "fashion_mnist", "fashion_mnist_arrays", "fashion_mnist_source",
           "DEBIAN_FASHION_MNIST"]

#: Where ``apt-get install dataset-fashion-mnist`` puts the files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
#: The environment variable that names another folder (or ``.npz``); set to a folder that does
#: not exist, it hides the Debian files (the tests then use their sample).
ENV_VAR = "SSNFX_FASHION_MNIST"
#: Array name -> idx file name, as Zalando publishes them (Debian adds nothing, torchvision keeps
#: them under ``<root>/FashionMNIST/raw``, gzipped and unzipped).
_IDX_FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
              "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


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
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":  # gzip's magic number: Debian's files, torchvision's .gz
        data = gzip.decompress(data)
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _idx_files(folder: Path) -> dict[str, Path] | None:
    """The four idx files in ``folder`` or in its torchvision layout, gzipped or not."""
    for where in (folder, folder / "FashionMNIST" / "raw"):
        found = {key: next((p for p in (where / f"{name}.gz", where / name) if p.is_file()), None)
                 for key, name in _IDX_FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def _missing(root: Path) -> str:
    return (f"Fashion-MNIST not found at {root}: install Debian's package "
            f"('apt-get install -y dataset-fashion-mnist'), or download it with torchvision "
            f"(torchvision.datasets.FashionMNIST(DIR, download=True)) and set {ENV_VAR}=DIR")


def fashion_mnist_source(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder (or ``.npz`` file) that :func:`fashion_mnist` reads for ``root``.

    Args:
        root: a folder holding the four idx files (Debian's layout) or ``FashionMNIST/raw/``
            (torchvision's), or a ``.npz`` with ``x_train``, ``y_train``, ``x_test`` and
            ``y_test``. None: ``$SSNFX_FASHION_MNIST`` if set, else Debian's folder.

    Raises:
        FileNotFoundError: one line naming both ways to get the data set.

    Example:
        >>> fashion_mnist_source("/no/such/folder")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        FileNotFoundError: Fashion-MNIST not found at /no/such/folder: install Debian's ...
    """
    if root is None:
        root = os.environ.get(ENV_VAR) or DEBIAN_FASHION_MNIST
    root = Path(root)
    if root.suffix == ".npz" and root.is_file():
        return root
    files = _idx_files(root)
    if files is None:
        raise FileNotFoundError(_missing(root))
    return files["x_train"].parent


def fashion_mnist_arrays(root: str | os.PathLike[str] | None = None) -> dict[str, np.ndarray]:
    """Fashion-MNIST as uint8 arrays: ``x_train`` ``(N, 28, 28)``, ``y_train`` ``(N,)``,
    ``x_test``, ``y_test``, from :func:`fashion_mnist_source` of ``root``.

    Example:
        >>> a = fashion_mnist_arrays("tests/data/fashion_mnist_sample.npz")  # the tests' sample
        >>> a["x_train"].shape, a["x_test"].shape, a["x_train"].dtype
        ((2000, 28, 28), (1000, 28, 28), dtype('uint8'))
    """
    source = fashion_mnist_source(root)
    if source.suffix == ".npz":
        with np.load(source) as npz:
            missing = [k for k in _IDX_FILES if k not in npz]
            if missing:
                raise ValueError(f"root={str(source)!r} lacks the arrays {missing}; a "
                                 f"Fashion-MNIST .npz holds {list(_IDX_FILES)}")
            return {k: npz[k] for k in _IDX_FILES}
    return {k: _idx(p) for k, p in _idx_files(source).items()}  # type: ignore[union-attr]


def fashion_mnist(batch_size: int = 128, seed: int = 0, root: str | os.PathLike[str] | None = None,
                  limit: int | None = None) -> tuple[DataLoader, DataLoader]:
    """Train/test loaders of Fashion-MNIST, ``(N,1,28,28)`` normalised by the full training set's
    statistics; ``limit`` keeps the first ``limit`` training and ``limit // 6`` test images (for
    quick runs). ``root`` is as in :func:`fashion_mnist_source`.

    Raises:
        FileNotFoundError: naming both ways to get the data set, when ``root`` holds none.

    Example:
        >>> train, test = fashion_mnist(root="tests/data/fashion_mnist_sample.npz", limit=600)
        >>> len(train.dataset), len(test.dataset)
        (600, 100)
    """
    arrays = fashion_mnist_arrays(root)
    x_train, x_test = (torch.tensor(arrays[k], dtype=torch.float32).unsqueeze(1) / 255.0
                       for k in ("x_train", "x_test"))
    y_train, y_test = (torch.tensor(arrays[k], dtype=torch.long) for k in ("y_train", "y_test"))
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
        x_test, y_test = x_test[: max(1, limit // 6)], y_test[: max(1, limit // 6)]
    mean, std = 0.2860, 0.3530  # the full training set's statistics
    return _loaders((x_train - mean) / std, y_train, (x_test - mean) / std, y_test, batch_size,
                    seed)
