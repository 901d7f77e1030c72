"""Small models covering every kind of parameter read, for the tests."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


def same_shape_stack(n: int = 8, d: int = 32) -> nn.Module:
    """``n`` Linear(d, d) layers with ReLUs: layers of one shape, whose SWN group outgrows P
    candidates at large budgets (the auto grouping then bins them by depth)."""
    return nn.Sequential(*[m for _ in range(n) for m in (nn.Linear(d, d), nn.ReLU())])


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


class TwoNames(nn.Module):
    """One Linear registered under two names (``a`` and ``b``) and called under both."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = self.a
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.b(torch.tanh(self.a(x)))))


class BranchyEncoder(nn.Module):
    """An embedding behind data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self, vocab: int = 40, dim: int = 12) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.emb(tokens)
        return torch.tanh(self.mix(h)) if h.sum() > 0 else self.mix(h)


class TiedAcrossLeaf(nn.Module):
    """A weight tied between a leaf (the encoder) and a traced layer (the head), under names of
    different lengths: RoBERTa's LM head and BART's shared embeddings in thirty lines."""

    def __init__(self, vocab: int = 40, dim: int = 12) -> None:
        super().__init__()
        self.encoder = BranchyEncoder(vocab, dim)
        self.output_projection = nn.Linear(dim, vocab, bias=False)
        self.output_projection.weight = self.encoder.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.output_projection(self.encoder(tokens))


class TiedInsideLeaf(nn.Module):
    """A weight used twice inside one leaf (GPT-2's tied head when the whole model is a leaf)."""

    def __init__(self, vocab: int = 40, dim: int = 12) -> None:
        super().__init__()
        self.encoder = BranchyEncoder(vocab, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.encoder.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.encoder(tokens)
        return self.head(h) if h.mean() > -1e9 else h  # the model's own forward is untraceable


class KeywordModel(nn.Module):
    """A forward as Hugging Face writes them: optional keyword inputs, an output object."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 16)
        self.body = nn.Linear(16, 16)
        self.head = nn.Linear(16, 30)
        self.register_buffer("unused_cache", torch.arange(4.0), persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        h = torch.relu(self.body(self.emb(input_ids)))
        if attention_mask is not None:
            h = h * attention_mask[..., None]
        logits = self.head(h)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return out


# ---- random architectures (tests/test_properties.py) ----------------------------------------
#
# A NetSpec is plain data, so that hypothesis prints a failing example as a spec that rebuilds
# the same network: RandomNet(NetSpec(...)).


@dataclass(frozen=True)
class NetSpec:
    """A random network: an input, a stack of blocks, a head.

    ``source``: ``"tokens"`` (an Embedding of ``width`` tokens into ``embed`` features, then a
    sequence), ``"sequence"`` (``(B, T, width)``), ``"vector"`` (``(B, width)``) or ``"image"``
    (``(B, width, 5, 5)``). Each block is a tuple:

    * ``("linear", out, bias)``: Linear (vectors, sequences);
    * ``("conv", out, kernel)``: Conv1d over a sequence, Conv2d over an image;
    * ``("norm",)``: BatchNorm1d (vectors), LayerNorm (sequences), BatchNorm2d (images);
    * ``("attn", heads)``: MultiheadAttention with a residual (sequences);
    * ``("branch", blocks_a, blocks_b, out)``: two stacks, each projected to ``out``, added;
    * ``("reuse", i)``: block ``i`` (a square linear or conv) again, under a second name.

    ``tie``: tokens only: per-token logits from a Linear tied to the Embedding's weight.
    """

    source: str
    width: int
    embed: int
    blocks: tuple[tuple[Any, ...], ...]
    tie: bool
    classes: int

    def example_input(self, batch: int = 3) -> torch.Tensor:
        gen = torch.Generator().manual_seed(0)
        if self.source == "tokens":
            return torch.randint(0, self.width, (batch, 4), generator=gen)
        shape = {"sequence": (batch, 4, self.width), "vector": (batch, self.width),
                 "image": (batch, self.width, 5, 5)}[self.source]
        return torch.randn(shape, generator=gen)


class _Conv1dOverSequence(nn.Module):
    def __init__(self, width: int, out: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(width, out, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


class _SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.attn(x, x, x, need_weights=False)
        return x + a


class _Branch(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a = a
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(x)


def _block(spec: tuple[Any, ...], kind: str, width: int) -> tuple[nn.Module, int]:
    """The module of one block and its output width, for a ``kind`` of vec/seq/img input."""
    name = spec[0]
    if name == "linear":
        return nn.Linear(width, spec[1], bias=spec[2]), spec[1]
    if name == "conv":
        conv = _Conv1dOverSequence(width, spec[1], spec[2]) if kind == "seq" \
            else nn.Conv2d(width, spec[1], spec[2], padding=spec[2] // 2)
        return conv, spec[1]
    if name == "norm":
        norm = {"vec": nn.BatchNorm1d, "seq": nn.LayerNorm, "img": nn.BatchNorm2d}[kind]
        return norm(width), width
    if name == "attn":
        return _SelfAttention(width, spec[1]), width
    if name == "branch":
        paths = []
        for blocks in spec[1:3]:
            layers, w = [], width
            for b in blocks:
                m, w = _block(b, kind, w)
                layers += [m, nn.Tanh()]
            layers.append(nn.Conv2d(w, spec[3], 1) if kind == "img" else nn.Linear(w, spec[3]))
            paths.append(nn.Sequential(*layers))
        return _Branch(*paths), spec[3]
    raise ValueError(f"unknown block {spec!r}")


class RandomNet(nn.Module):
    """The network a :class:`NetSpec` describes (see there)."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        kind = {"tokens": "seq", "sequence": "seq", "vector": "vec", "image": "img"}[spec.source]
        self.kind = kind
        width = spec.width
        if spec.source == "tokens":
            self.emb = nn.Embedding(spec.width, spec.embed)
            width = spec.embed
        self.blocks = nn.ModuleList()
        self.steps: list[str] = []  # the attribute path of the module applied at each step
        built: dict[int, int] = {}  # spec position -> index in self.blocks
        for i, b in enumerate(spec.blocks):
            if b[0] == "reuse":
                # The same module under a second name: its parameters are tied (one slot each,
                # with aliases), and its state_dict keys appear under both names.
                self.add_module(f"again{i}", self.blocks[built[b[1]]])
                self.steps.append(f"again{i}")
                continue
            module, width = _block(b, kind, width)
            built[i] = len(self.blocks)
            self.steps.append(f"blocks.{built[i]}")
            self.blocks.append(module)
        self.tied = spec.tie and spec.source == "tokens"
        if self.tied:
            self.proj = nn.Linear(width, spec.embed) if width != spec.embed else nn.Identity()
            self.head = nn.Linear(spec.embed, spec.width, bias=False)
            self.head.weight = self.emb.weight
        else:
            self.head = nn.Linear(width, spec.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "emb"):
            x = self.emb(x)
        for path in self.steps:
            x = torch.tanh(self.get_submodule(path)(x))
        if self.tied:
            return self.head(self.proj(x))
        if self.kind == "img":
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        elif self.kind == "seq":
            x = x.mean(1)
        return self.head(x)
