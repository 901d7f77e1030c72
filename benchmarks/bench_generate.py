"""Greedy generate() on a small Llama: the shared model against its folded self, tokens/s.

The shared model is the user's class, so Hugging Face's ``generate`` runs on it as it is; under
``no_grad`` its weights are made once and reused while the store is unchanged, so each token
costs what the folded (plain) model's does. Interleaved runs in one process, median of each.

    python benchmarks/bench_generate.py [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import ssnfx

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import write  # noqa: E402


def llama(hidden: int, layers: int, vocab: int) -> torch.nn.Module:
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.LlamaConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64, intermediate_size=4 * hidden, vocab_size=vocab,
        max_position_embeddings=256, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def tokens_per_second(model: torch.nn.Module, prompt: torch.Tensor, new: int) -> float:
    with torch.no_grad():
        start = time.perf_counter()
        out = model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                             pad_token_id=0)
        seconds = time.perf_counter() - start
    assert out.shape[1] == prompt.shape[1] + new
    return new * prompt.shape[0] / seconds


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tiny model, 2 repeats")
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args(argv)
    hidden, layers, vocab, repeats = (64, 2, 500, 2) if args.quick else (512, 8, 8000, 7)
    model = llama(hidden, layers, vocab)
    shared = ssnfx.share(model, args.budget).eval()
    folded = ssnfx.fold(shared)
    prompt = torch.randint(1, vocab, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the same tokens: the shared model generates what it deploys as
        assert torch.equal(shared.generate(prompt, max_new_tokens=8, do_sample=False,
                                           pad_token_id=0),
                           folded.generate(prompt, max_new_tokens=8, do_sample=False,
                                           pad_token_id=0))
    speed: dict[str, list[float]] = {"shared": [], "folded": []}
    for _ in range(repeats):  # interleaved, so that drift of the machine hits both alike
        for name, m in (("shared", shared), ("folded", folded)):
            speed[name].append(tokens_per_second(m, prompt, args.tokens))
    med = {k: statistics.median(v) for k, v in speed.items()}
    params = sum(p.numel() for p in model.parameters())
    rows = ["| model | budget | shared tok/s | folded tok/s | shared time / folded time |",
            "|---|---:|---:|---:|---:|",
            f"| Llama {hidden}x{layers} ({params / 1e6:.1f}M), batch 1 | {args.budget:.0%} | "
            f"{med['shared']:.1f} | {med['folded']:.1f} | "
            f"{med['folded'] / med['shared']:.2f}x |"]
    body = "\n".join(rows) + (
        f"\n\nGreedy `generate()` of {args.tokens} new tokens after a 16-token prompt, with the "
        f"key-value cache, {torch.get_num_threads()} CPU thread(s); median of {repeats} "
        f"interleaved runs. The shared model is ssnfx.share's (the user's LlamaForCausalLM), "
        f"the folded one ssnfx.fold's; both give the same tokens.")
    print(body)
    if not args.quick:
        write("generate", "generate() on the shared model", body,
              "python benchmarks/bench_generate.py")
    return body


if __name__ == "__main__":
    main()
