import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from ssnfx.data import (
    DEBIAN_FASHION_MNIST,
    digits,
    fashion_mnist,
    fashion_mnist_arrays,
    fashion_mnist_source,
)

SAMPLE = Path(__file__).resolve().parent / "data" / "fashion_mnist_sample.npz"


def test_digits_split_is_stratified_and_normalised():
    train, test = digits(batch_size=32, seed=0)
    x = torch.cat([b for b, _ in train])
    y = torch.cat([t for _, t in test])
    assert x.shape == (1437, 1, 8, 8) and abs(float(x.mean())) < 1e-4
    assert torch.bincount(y).min() >= 35  # every class in the test split


def test_the_committed_sample_is_small_stratified_and_licensed():
    assert SAMPLE.stat().st_size < 2_000_000
    a = fashion_mnist_arrays(SAMPLE)
    assert a["x_train"].shape == (2000, 28, 28) and a["x_test"].shape == (1000, 28, 28)
    assert np.bincount(a["y_train"]).tolist() == [200] * 10
    assert np.bincount(a["y_test"]).tolist() == [100] * 10
    note = (SAMPLE.parent / "README.md").read_text()
    assert "MIT License" in note and "Zalando" in note


def test_fashion_mnist_loads_the_sample():
    train, test = fashion_mnist(batch_size=100, root=SAMPLE, limit=600)
    x, y = next(iter(train))
    assert x.shape == (100, 1, 28, 28) and x.dtype == torch.float32
    assert len(train.dataset) == 600 and len(test.dataset) == 100
    assert int(y.min()) >= 0 and int(y.max()) <= 9


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


NAMES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
         "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


@pytest.mark.parametrize("layout", ["debian", "torchvision"])
def test_fashion_mnist_reads_debian_and_torchvision_folders(tmp_path, layout):
    # Debian: the four .gz files in one folder; torchvision's FashionMNIST(root, download=True):
    # <root>/FashionMNIST/raw/, unzipped beside the .gz (only the unzipped ones here).
    a = fashion_mnist_arrays(SAMPLE)
    folder = tmp_path if layout == "debian" else tmp_path / "FashionMNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in NAMES.items():
        compress = layout == "debian"
        _write_idx(folder / (name + ".gz" * compress), a[key], compress)
    assert fashion_mnist_source(tmp_path) == folder
    read = fashion_mnist_arrays(tmp_path)
    assert all(np.array_equal(read[k], a[k]) for k in NAMES)


def test_the_environment_variable_names_or_hides_the_data(tmp_path, monkeypatch):
    monkeypatch.setenv("SSNFX_FASHION_MNIST", str(SAMPLE))
    assert fashion_mnist_source() == SAMPLE
    monkeypatch.setenv("SSNFX_FASHION_MNIST", str(tmp_path / "hidden"))
    with pytest.raises(FileNotFoundError) as info:
        fashion_mnist()
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "hidden") in message
    assert "apt-get install -y dataset-fashion-mnist" in message
    assert "torchvision.datasets.FashionMNIST(DIR, download=True)" in message


def _full_set_present() -> bool:
    try:  # where SSNFX_FASHION_MNIST points, else Debian's folder: set it to hide the data
        return fashion_mnist_source().suffix != ".npz"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not _full_set_present(),
                    reason=f"the full data set is absent ({DEBIAN_FASHION_MNIST} or "
                           f"$SSNFX_FASHION_MNIST); .ci/run installs it")
def test_the_full_fashion_mnist():
    full, test = fashion_mnist(batch_size=1000)
    assert len(full.dataset) == 60000 and len(test.dataset) == 10000
    x = full.dataset.tensors[0]
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3
    # The sample is the full set's images at the indices it records.
    a, sample = fashion_mnist_arrays(), fashion_mnist_arrays(SAMPLE)
    index = np.load(SAMPLE)["train_index"]
    assert np.array_equal(a["x_train"][index], sample["x_train"])
