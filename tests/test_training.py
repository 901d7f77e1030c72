"""A short real training run: a CNN shared at 10% learns sklearn's digits, and folds exactly."""
import pytest
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


def test_refine_between_epochs_keeps_one_schedule():
    """on_epoch runs after each epoch within one optimizer and cosine schedule: SWN's refine
    after E epochs of hard sharing (Sec. 2.2.2), with the model back in train mode after it."""
    train_loader, _ = digits(batch_size=64, seed=0)
    shared = ssnfx.share(SmallCNN(width=8), 0.3, ssnfx.ShareConfig(
        method="swn", options={"hard_sharing": True}))
    optimizer = torch.optim.Adam(shared.parameters(), lr=1e-2)
    seen = []

    def after(epoch: int) -> None:
        seen.append((epoch, optimizer.param_groups[0]["lr"]))
        if epoch == 0:
            ssnfx.refine(shared, train_loader, F.cross_entropy, steps=3, beta=0.0)
            shared.eval()  # the loop must put it back in train mode

    train(shared, train_loader, F.cross_entropy, epochs=2, optimizer=optimizer, progress=False,
          on_epoch=after)
    assert [e for e, _ in seen] == [0, 1]
    # One cosine schedule over both epochs: half of the rate after the first, none at the end.
    assert seen[0][1] == pytest.approx(5e-3) and seen[1][1] == pytest.approx(0, abs=1e-9)
    assert shared.training


def test_swn_schedule_search_hard_sharing_refine(monkeypatch):
    """SWN Sec. 2.2 in two calls: share() with data trains a hard-shared model and clusters the
    layers by Eq. 2 over its last epoch; train() trains the clustered model hard-shared for the
    first ``refine_at`` of its steps, then refines (once), then trains on, in one schedule."""
    import ssnfx.training as training

    train_loader, _ = digits(batch_size=64, seed=0)
    cfg = ssnfx.ShareConfig(method="swn", options={"hard_sharing": True}, refine_at=0.25)
    shared = ssnfx.share(SmallCNN(width=8), 0.3, cfg, data=train_loader,
                         loss_fn=F.cross_entropy,
                         search_config=ssnfx.SearchConfig(epochs=1, measure=0.5,
                                                          progress=False))
    m = shared.ssnfx.plan.measured
    assert m["statistic"] == "superweights" and m["measured_steps"] == round(0.5 * 23)
    assert [g.slots for g in shared.ssnfx.plan.groups] == m["superweight_clusters"]
    assert shared.ssnfx.plan.options.refine_at == 0.25 and "refined" not in m
    steps = []
    real = training.refine
    monkeypatch.setattr(training, "refine", lambda *a, **k: steps.append(len(seen)) or
                        real(*a, **k))
    seen = []
    losses = train(shared, train_loader, lambda o, y: seen.append(1) or F.cross_entropy(o, y),
                   epochs=2, progress=False)
    # Refined once, after a quarter of the 2 x 23 steps (the measurement's own losses after).
    assert steps == [12] and len(shared.ssnfx.plan.measured["refined"]) == 1
    assert losses[1] < losses[0]
