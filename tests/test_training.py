"""A short real training run: a CNN shared at 10% learns sklearn's digits, and folds exactly."""
import torch
import torch.nn.functional as F

import ssnfx
from ssnfx.data import digits
from ssnfx.training import accuracy, predict, train

from models import SmallCNN


def test_shared_cnn_learns_digits_and_folds_to_the_same_predictions():
    train_loader, test_loader = digits(batch_size=64, seed=0)
    model = SmallCNN(width=16)
    shared = ssnfx.share(model, budget=0.1)
    n = sum(p.numel() for p in shared.parameters())
    assert n <= 0.1 * sum(p.numel() for p in model.parameters())
    losses = train(shared, train_loader, F.cross_entropy, epochs=15, lr=1e-2, progress=False)
    assert losses[-1] < losses[0] / 3
    acc = accuracy(shared, test_loader)
    assert acc > 0.8, acc  # chance is 0.1

    folded = ssnfx.fold(shared.eval())
    assert torch.equal(predict(folded, test_loader), predict(shared, test_loader))
    plain = SmallCNN(width=16)
    plain.load_state_dict(folded.state_dict())
    assert accuracy(plain, test_loader) == acc
