"""Hugging Face transformers as users have them: built from tiny configs (hidden 64, 2 layers; no
weights are downloaded), called with keyword inputs, with no wrapper and no manual leaf.

Part of the zoo step (``pytest -m zoo``); needs the ``zoo`` extra (``pip install -e '.[zoo]'``).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import ssnfx

from helpers import check_pipeline, count_params, first_tensor

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.zoo

VOCAB, HIDDEN = 500, 64
_TEXT = dict(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
             intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=64)
_IMAGE = dict(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=128, image_size=32, patch_size=8)


def _ids(n: int = 8) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, n), generator=torch.Generator().manual_seed(0))


def _text(labels: bool = True) -> dict[str, Any]:
    ids = _ids()
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return {**out, "labels": ids} if labels else out


def _seq2seq() -> dict[str, Any]:
    return {**_text(labels=False), "labels": _ids(6), "use_cache": False}


def _pixels() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


#: name -> (model from a config, keyword inputs, the output's main tensor)
MODELS: dict[str, tuple[Callable[[], Any], Callable[[], dict[str, Any]], str]] = {
    "bert": (lambda: transformers.BertForMaskedLM(transformers.BertConfig(**_TEXT)),
             _text, "logits"),
    "roberta": (lambda: transformers.RobertaForMaskedLM(transformers.RobertaConfig(
        **_TEXT, pad_token_id=1)), _text, "logits"),
    "gpt2": (lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_embd=HIDDEN, n_layer=2, n_head=2, vocab_size=VOCAB, n_positions=64,
        bos_token_id=0, eos_token_id=0)), lambda: {**_text(), "use_cache": False}, "logits"),
    "llama": (lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **_TEXT, num_key_value_heads=2, bos_token_id=0, eos_token_id=0)),
        lambda: {**_text(), "use_cache": False}, "logits"),
    "t5": (lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        d_model=HIDDEN, d_ff=128, num_layers=2, num_heads=2, d_kv=32, vocab_size=VOCAB,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)), _seq2seq, "logits"),
    "bart": (lambda: transformers.BartForConditionalGeneration(transformers.BartConfig(
        d_model=HIDDEN, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=VOCAB,
        max_position_embeddings=64)), _seq2seq, "logits"),
    "vit": (lambda: transformers.ViTForImageClassification(transformers.ViTConfig(
        **_IMAGE, num_labels=10)),
        lambda: {"pixel_values": _pixels(), "labels": torch.tensor([1, 2])}, "logits"),
    "clip": (lambda: transformers.CLIPModel(transformers.CLIPConfig(
        text_config={**_TEXT, "max_position_embeddings": 32, "bos_token_id": 0,
                     "eos_token_id": 2}, vision_config=_IMAGE, projection_dim=32)),
        lambda: {**_text(labels=False), "pixel_values": _pixels(), "return_loss": True},
        "logits_per_image"),
}


def _build(name: str) -> tuple[Any, dict[str, Any], str]:
    make, inputs, key = MODELS[name]
    torch.manual_seed(0)
    return make(), inputs(), key


@pytest.mark.parametrize("name", MODELS)
def test_transformers_share_as_they_are(name, tmp_path):
    model, kwargs, key = _build(name)
    # check_pipeline: budget within 95-100%, fold == shared at 1e-5, strict load of the folded
    # state_dict into a fresh model of the same config, gradients reach every store, and the
    # save/load round trip.
    shared, folded = check_pipeline(model, (), 0.1, backward=True, kwargs=kwargs,
                                    fresh=type(model)(model.config),
                                    checkpoint=tmp_path / "c.pt")
    assert 0.95 * 0.1 * count_params(model) <= count_params(shared) <= 0.1 * count_params(model)
    assert set(shared.meta["ssnfx_trace"]["auto_leaves"]) == {""}  # HF forwards: one leaf call
    assert shared(**kwargs)[key].shape == model(**kwargs)[key].shape

    # The loss the model computes itself trains the store, and one step changes the outputs.
    shared.train()
    loss = shared(**kwargs).loss
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    opt = torch.optim.SGD(shared.parameters(), lr=0.5)
    shared.eval()
    with torch.no_grad():
        before = first_tensor(shared(**kwargs)[key]).clone()
    opt.step()
    with torch.no_grad():
        after = first_tensor(shared(**kwargs)[key])
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_causal_lm_generates_from_the_folded_weights(name):
    model, _, _ = _build(name)
    folded = ssnfx.fold(ssnfx.share(model, 0.1).eval())
    fresh = type(model)(model.config).eval()
    fresh.load_state_dict(folded.state_dict(), strict=True)
    prompt = _ids(4)
    with torch.no_grad():
        tokens = fresh.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0)
        # Greedy decoding with the folded model's own forward gives the same tokens.
        ids = prompt
        for _ in range(5):
            logits = folded(input_ids=ids, use_cache=False).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert tokens.shape == (2, 9)
    assert torch.equal(tokens, ids)


@pytest.mark.parametrize("name", ["bert", "t5"])
@pytest.mark.parametrize("budget", [0.01, 2.0])
def test_small_and_large_budgets(name, budget):
    model, kwargs, key = _build(name)
    try:
        shared = ssnfx.share(model, budget)
    except ssnfx.BudgetError as e:  # 1% can be below the private parameters and coefficients
        assert budget == 0.01 and "the least this model can be shared with" in str(e)
        return
    n, target = count_params(shared), int(budget * count_params(model))
    assert 0.95 * target <= n <= target
    shared.eval()
    folded = ssnfx.fold(shared)
    with torch.no_grad():
        torch.testing.assert_close(folded(**kwargs)[key], shared(**kwargs)[key],
                                   rtol=1e-5, atol=1e-5)
    type(model)(model.config).load_state_dict(folded.state_dict(), strict=True)


def test_readme_transformers_example_runs():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(import torch, transformers, ssnfx\n.*?)```", readme,
                     re.S).group(1)
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["deployed"].config is scope["config"]
    assert torch.isfinite(scope["loss"])
