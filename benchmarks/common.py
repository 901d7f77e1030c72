"""Shared bits of the benchmark scripts: the environment header, result files and data."""
from __future__ import annotations

import datetime
import os
import platform
import statistics
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

import ssnfx
from ssnfx.data import fashion_mnist, fashion_mnist_source

RESULTS = Path(__file__).resolve().parent / "results"
#: The tests' 3,000-image sample of Fashion-MNIST (tests/data/README.md): what the --quick modes
#: read when the full data set is absent, so that the tests run anywhere.
SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "fashion_mnist_sample.npz"


def environment() -> str:
    """One line: machine, versions, threads and date, for every results file."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, torchvision "
            f"{torchvision.__version__}, ssnfx {ssnfx.__version__}, "
            f"{torch.get_num_threads()} threads, {datetime.date.today().isoformat()}")


def mean_std(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0] * scale:.{digits}f}"
    mean, std = statistics.mean(values) * scale, statistics.stdev(values) * scale
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def write(name: str, title: str, body: str, command: str) -> Path:
    """Write ``results/<name>.md`` with the environment and the command that produced it."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(f"## {title}\n\n`{command}`: {environment()}\n\n{body}\n")
    return path


def publish(name: str, title: str, body: str, command: str, quick: bool = False) -> str:
    """Print a benchmark's ``body`` and return it; unless ``quick``, first write it to
    ``results/<name>.md`` (:func:`write`) and print the file."""
    if quick:
        print(body)
        return body
    print(write(name, title, body, command).read_text())
    return body


def fashion_data(quick: bool) -> Path:
    """The Fashion-MNIST a benchmark reads: the full set (``$SSNFX_FASHION_MNIST``, else Debian's
    folder; see :func:`ssnfx.data.fashion_mnist_source`), or in a ``--quick`` run without it the
    tests' sample. A full run without it exits with a one-line error naming both ways to get it.
    """
    try:
        return fashion_mnist_source()
    except FileNotFoundError as e:
        if quick:
            return SAMPLE
        raise SystemExit(f"error: {e}") from None


def data_note(source: Path) -> str:
    """One sentence for a benchmark's output: which Fashion-MNIST it read."""
    if source == SAMPLE:
        return (f"Data: the tests' {SAMPLE.stat().st_size / 1e6:.1f} MB sample of Fashion-MNIST "
                f"(tests/data/{SAMPLE.name}: 2,000 training, 1,000 test images), the full set "
                f"being absent: the figures check the code, not the method.")
    return f"Data: Fashion-MNIST from {source}."


def fashion_loaders(limit: int | None, seed: int, batch_size: int = 128,
                    test_limit: int | None = None,
                    root: Path | None = None) -> tuple[DataLoader, DataLoader]:
    """Fashion-MNIST from ``root`` (see :func:`fashion_data`): the first ``limit`` training
    images (all with None), shuffled by ``seed``, and the first ``test_limit`` test images (all
    with None), whereas ``fashion_mnist(limit=)`` cuts the test set with the training set."""
    train, test = fashion_mnist(batch_size=batch_size, seed=seed, root=root)
    if limit is not None:
        x, y = train.dataset.tensors
        train = DataLoader(TensorDataset(x[:limit], y[:limit]), batch_size=batch_size,
                           shuffle=True, generator=torch.Generator().manual_seed(seed))
    if test_limit is not None:
        x, y = test.dataset.tensors
        test = DataLoader(TensorDataset(x[:test_limit], y[:test_limit]), batch_size=512)
    return train, test
