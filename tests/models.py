"""Small models covering every kind of parameter read, for the tests."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SmallCNN(nn.Module):
    """A digits-sized CNN: conv, BN, linear."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x))) + x
        x = F.adaptive_avg_pool2d(x, 2)
        return self.fc(x.flatten(1))


class TiedLM(nn.Module):
    """An embedding whose weight is also the output projection (tied weights)."""

    def __init__(self, vocab: int = 50, dim: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.mix(self.emb(tokens))))


class FunctionalNet(nn.Module):
    """Parameters used directly, through torch.nn.functional and a matmul."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(32, 12) / 12 ** 0.5)
        self.b1 = nn.Parameter(torch.zeros(32))
        self.w2 = nn.Parameter(torch.randn(32, 8) / 32 ** 0.5)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (torch.relu(F.linear(x, self.w1, self.b1)) @ self.w2)


class AttnNet(nn.Module):
    """MultiheadAttention stays a leaf and receives generated weights via functional_call."""

    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(8, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head(self.norm(h + a).mean(1))


class GRUNet(nn.Module):
    """A GRU (leaf) followed by a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(8, 12, num_layers=2, batch_first=True)
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(6, 10, batch_first=True)
        self.head = nn.Linear(10, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out.mean(1))


class DataDependent(nn.Module):
    """Control flow on tensor values: cannot be traced unless ``Gate`` is a leaf."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Linear(4, 4)
        self.gate = Gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.pre(x))


class Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x @ self.w
        return x


class ThreeBranches(nn.Module):
    """Branches a and c learn the same target, branch b its opposite: a and c agree, b conflicts."""

    def __init__(self) -> None:
        super().__init__()
        for name in "abc":
            self.add_module(name + "1", nn.Linear(16, 32))
            self.add_module(name + "2", nn.Linear(32, 4))

    def forward(self, x):
        return torch.cat([getattr(self, n + "2")(torch.tanh(getattr(self, n + "1")(x)))
                          for n in "abc"], dim=1)


def conflict_data(batches: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(16, 4, generator=gen)
    out = []
    for _ in range(batches):
        x = torch.randn(32, 16, generator=gen)
        t = 5 * x @ w
        out.append((x, torch.cat([t, -t, t], dim=1)))
    return out
