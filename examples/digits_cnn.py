"""The bundled default for `ssnfx compile`: a small CNN on scikit-learn's digits (no download).

The names ssnfx looks for: `build_model` (or `model`), `train_loader`, `test_loader`, `loss_fn`,
`example_inputs`.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ssnfx.data import digits

train_loader, test_loader = digits(batch_size=64, seed=0)
loss_fn = F.cross_entropy
example_inputs = (torch.randn(2, 1, 8, 8),)


class DigitsCNN(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x))) + x
        return self.fc(F.adaptive_avg_pool2d(x, 2).flatten(1))


def build_model() -> nn.Module:
    return DigitsCNN()
