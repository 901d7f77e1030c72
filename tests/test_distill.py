import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ssnfx
from ssnfx.data import digits
from ssnfx.distill import DistillationLoss, distillation_loss, with_teacher
from ssnfx.training import accuracy, train

from helpers import check_pipeline, count_params
from models import SmallCNN


def test_distillation_loss_is_hintons_soft_target_loss():
    torch.manual_seed(0)
    s, t = torch.randn(8, 5, requires_grad=True), torch.randn(8, 5, requires_grad=True)
    y = torch.randint(0, 5, (8,))
    T, alpha = 3.0, 0.7
    p_t = (t / T).softmax(1)
    kl = (p_t * (p_t.log() - (s / T).log_softmax(1))).sum(1).mean()
    expected = alpha * T * T * kl + (1 - alpha) * F.cross_entropy(s, y)
    loss = distillation_loss(s, t, y, temperature=T, alpha=alpha)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert s.grad is not None and t.grad is None  # the teacher is not trained


def test_the_t_squared_scaling_keeps_soft_gradients_comparable_across_temperatures():
    torch.manual_seed(0)
    s, t, y = torch.randn(64, 10), torch.randn(64, 10), torch.randint(0, 10, (64,))
    norms = []
    for temperature in (2.0, 8.0):
        x = s.clone().requires_grad_()
        distillation_loss(x, t, y, temperature, alpha=1.0).backward()
        norms.append(float(x.grad.norm()))
    # Unscaled, the soft gradient would shrink like 1/T^2 (16x from T=2 to T=8); the T^2 factor
    # keeps it about the same (Hinton et al., Sec. 2).
    assert 0.5 < norms[0] / norms[1] < 2.0


def test_distillation_loss_edges_and_errors():
    s, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    assert torch.equal(distillation_loss(s, torch.randn(4, 3), y, alpha=0.0),
                       F.cross_entropy(s, y))
    assert float(distillation_loss(s, s, y, alpha=1.0)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="temperature must be positive"):
        distillation_loss(s, s, y, temperature=0.0)
    with pytest.raises(ValueError, match=r"alpha .* \[0, 1\]"):
        distillation_loss(s, s, y, alpha=1.5)
    with pytest.raises(ValueError, match="differ in shape"):
        distillation_loss(s, torch.randn(4, 5), y)
    with pytest.raises(ValueError, match="with_teacher"):
        DistillationLoss()(s, y)


def test_a_student_over_its_own_size_trains_and_folds_to_its_own_size():
    student = SmallCNN(4)
    n = count_params(student)
    shared, folded = check_pipeline(student, (torch.randn(4, 1, 8, 8),), budget=4.0,
                                    backward=True)
    assert 0.95 * 4 * n <= count_params(shared) <= 4 * n
    assert count_params(folded) == n  # fold removes the surplus: the student's own size


def test_distilling_into_a_shared_student_with_a_teacher():
    torch.manual_seed(0)
    train_loader, test_loader = digits()
    batches = [b for _, b in zip(range(8), train_loader)]
    teacher = SmallCNN(8)
    train(teacher, batches, F.cross_entropy, epochs=2, progress=False)
    data = with_teacher(batches, teacher)
    assert len(data) == len(batches)
    x, (y, logits) = next(iter(data))
    assert not teacher.training and not logits.requires_grad
    torch.testing.assert_close(logits, teacher(x))
    student = ssnfx.share(SmallCNN(4), 4.0, data=data, loss_fn=DistillationLoss(),
                          search_config=ssnfx.SearchConfig(steps=3, progress=False))
    losses = train(student, data, DistillationLoss(temperature=4.0, alpha=0.9), epochs=2,
                   progress=False)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    folded = ssnfx.fold(student.eval())
    fresh = SmallCNN(4).eval()
    fresh.load_state_dict(folded.state_dict(), strict=True)
    assert accuracy(fresh, test_loader) == pytest.approx(accuracy(student, test_loader))
    assert count_params(fresh) * 3.8 < count_params(student)


def test_with_teacher_passes_tuple_inputs_as_arguments():
    class Two(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    x, (_, logits) = next(iter(with_teacher([((torch.ones(1, 2), torch.ones(1, 2)), 0)], Two())))
    assert torch.equal(logits, torch.full((1, 2), 2.0))
