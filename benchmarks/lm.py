"""A byte-level decoder language model on real text, for the accuracy-at-equal-parameters benchmark.

The text is the Python sources of the installed torch package (offline everywhere torch is),
split into training and validation **by file** (a file's path hash), so that validation bytes
come from files the model never saw. Windows are drawn at random offsets with a seeded
generator; the validation windows are fixed, so every run is scored on the same bytes.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ByteLM", "corpus", "windows", "validation_windows", "bits_per_byte", "lm_params"]


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention and a 4x MLP."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class ByteLM(nn.Module):
    """A GPT-style byte model: token and position embeddings, ``depth`` blocks, a final norm and
    an untied head over the 256 byte values."""

    def __init__(self, dim: int = 128, depth: int = 4, context: int = 128) -> None:
        super().__init__()
        # 4 heads of 32 at the full width; narrower models keep heads of at least 8.
        heads = next(h for h in (4, 2, 1) if dim % h == 0 and dim // h >= 8 or h == 1)
        self.tokens = nn.Embedding(256, dim)
        self.positions = nn.Embedding(context, dim)
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 256)
        for m in self.modules():  # GPT-2's initialisation
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.head(self.norm(self.blocks(self.tokens(idx) + self.positions(pos))))


def lm_params(dim: int, depth: int, context: int = 128) -> int:
    """Parameters of ``ByteLM(dim, depth, context)``, without building it."""
    block = 12 * dim * dim + 13 * dim
    return 256 * dim + context * dim + depth * block + 2 * dim + 256 * dim + 256


def corpus(limit: int = 8 << 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and validation bytes (uint8 tensors): torch's ``.py`` files in path order, one
    file in ten (by the hash of its relative path) held out for validation, each side cut at
    ``limit`` bytes."""
    root = Path(torch.__file__).resolve().parent
    parts: dict[bool, list[bytes]] = {True: [], False: []}
    sizes = {True: 0, False: 0}
    for path in sorted(root.rglob("*.py")):
        held_out = hashlib.sha1(str(path.relative_to(root)).encode()).digest()[0] % 10 == 0
        if sizes[held_out] >= limit:
            continue
        data = path.read_bytes()
        parts[held_out].append(data)
        sizes[held_out] += len(data)
    def joined(chunks: list[bytes]) -> torch.Tensor:
        return torch.frombuffer(bytearray(b"".join(chunks)[:limit]), dtype=torch.uint8)
    return joined(parts[False]), joined(parts[True])


def windows(text: torch.Tensor, batch: int, context: int, seed: int
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(inputs, targets)`` batches of random windows (targets shifted by one byte)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        start = torch.randint(0, text.numel() - context - 1, (batch,), generator=gen)
        chunk = text[start[:, None] + torch.arange(context + 1)].long()
        yield chunk[:, :-1], chunk[:, 1:]


def validation_windows(text: torch.Tensor, count: int, context: int) -> torch.Tensor:
    """``count`` evenly spaced windows of ``context + 1`` bytes: the same for every run."""
    starts = torch.linspace(0, text.numel() - context - 2, count).long()
    return text[starts[:, None] + torch.arange(context + 1)].long()


@torch.no_grad()
def bits_per_byte(model: nn.Module, held_out: torch.Tensor, batch: int = 64) -> float:
    """Mean cross-entropy of the next byte over ``held_out`` windows, in bits."""
    model.eval()
    total, count = 0.0, 0
    for chunk in held_out.split(batch):
        logits = model(chunk[:, :-1])
        total += float(F.cross_entropy(logits.reshape(-1, 256), chunk[:, 1:].reshape(-1),
                                       reduction="sum"))
        count += chunk[:, 1:].numel()
    model.train()
    return total / count / math.log(2)
