import torch

from ssnfx.data import digits, fashion_mnist


def test_digits_split_is_stratified_and_normalised():
    train, test = digits(batch_size=32, seed=0)
    x = torch.cat([b for b, _ in train])
    y = torch.cat([t for _, t in test])
    assert x.shape == (1437, 1, 8, 8) and abs(float(x.mean())) < 1e-4
    assert torch.bincount(y).min() >= 35  # every class in the test split


def test_fashion_mnist_from_the_debian_package():
    train, test = fashion_mnist(batch_size=100, limit=600)
    x, y = next(iter(train))
    assert x.shape == (100, 1, 28, 28) and x.dtype == torch.float32
    assert len(train.dataset) == 600 and len(test.dataset) == 100
    assert int(y.min()) >= 0 and int(y.max()) <= 9
    full, _ = fashion_mnist(batch_size=1000)
    assert len(full.dataset) == 60000


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    import pytest
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        fashion_mnist(root=tmp_path)
