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


_IDS = dict(bos_token_id=0, eos_token_id=0, pad_token_id=0)
_LM = {**_TEXT, **_IDS, "num_key_value_heads": 2}
_SEQ2SEQ = dict(d_model=HIDDEN, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
                vocab_size=VOCAB, max_position_embeddings=64, decoder_start_token_id=0,
                pad_token_id=0, eos_token_id=1)

#: Models that generate: causal LMs of several families (attention variants, ALiBi, a state
#: space model) and seq2seq models (Marian with its frozen sinusoidal positions).
GENERATORS: dict[str, Callable[[], Any]] = {
    "gpt2": MODELS["gpt2"][0],
    "llama": MODELS["llama"][0],
    "t5": MODELS["t5"][0],
    "opt": lambda: transformers.OPTForCausalLM(transformers.OPTConfig(
        hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, ffn_dim=128,
        vocab_size=VOCAB, max_position_embeddings=64, word_embed_proj_dim=HIDDEN, **_IDS)),
    "bloom": lambda: transformers.BloomForCausalLM(transformers.BloomConfig(
        hidden_size=HIDDEN, n_layer=2, n_head=2, vocab_size=VOCAB, **_IDS)),
    "falcon": lambda: transformers.FalconForCausalLM(transformers.FalconConfig(
        hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, vocab_size=VOCAB,
        **_IDS)),
    "gemma": lambda: transformers.GemmaForCausalLM(transformers.GemmaConfig(**_LM, head_dim=32)),
    "qwen3": lambda: transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**_LM, head_dim=32)),
    "mamba": lambda: transformers.MambaForCausalLM(transformers.MambaConfig(
        hidden_size=HIDDEN, num_hidden_layers=2, vocab_size=VOCAB, state_size=8, **_IDS)),
    "marian": lambda: transformers.MarianMTModel(transformers.MarianConfig(**_SEQ2SEQ)),
}


@pytest.mark.parametrize("name", GENERATORS)
def test_the_shared_model_is_the_users_class_and_generates(name, tmp_path):
    """share returns the user's class: generate() (with its key-value cache) on the shared
    model gives the folded model's tokens, fold returns the class with plain weights, and
    save_pretrained / from_pretrained round-trips it."""
    torch.manual_seed(0)
    model = GENERATORS[name]().eval()
    shared = ssnfx.share(model, 0.1).eval()
    assert isinstance(shared, type(model)) and shared.config.to_dict() == model.config.to_dict()
    assert shared.num_parameters() == count_params(shared) <= 0.1 * count_params(model) \
        + shared.ssnfx.plan.frozen_params
    assert shared.get_input_embeddings() is not None
    prompt = _ids(4)
    with torch.no_grad():
        tokens = shared.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
        folded = ssnfx.fold(shared)
        assert type(folded) is type(model) and not hasattr(folded, "ssnfx")
        assert torch.equal(folded.generate(prompt, max_new_tokens=6, do_sample=False,
                                           pad_token_id=0), tokens)
    folded.save_pretrained(tmp_path)
    again = type(model).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again.generate(prompt, max_new_tokens=6, do_sample=False,
                                          pad_token_id=0), tokens)
    if name == "marian":  # frozen sinusoidal positions: frozen, private, outside the budget
        plan = shared.ssnfx.plan
        assert plan.frozen_params > 0 and plan.budget == int(0.1 * plan.trainable_params)
        frozen = [n for n, p in shared.named_parameters() if not p.requires_grad]
        assert frozen and all("embed_positions" in n for n in frozen)


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


def test_readme_transformers_example_runs(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(import torch, transformers, ssnfx\n.*?)```", readme,
                     re.S).group(1)
    monkeypatch.chdir(tmp_path)  # it writes a save_pretrained folder
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert type(scope["deployed"]) is transformers.GPT2LMHeadModel
    assert isinstance(scope["shared"], transformers.GPT2LMHeadModel)
    assert torch.isfinite(scope["loss"])
    again = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2-folded")
    assert torch.equal(again.generate(scope["prompt"], max_new_tokens=8), scope["tokens"])


def _text_rows(n: int, length: int = 33) -> list[dict[str, torch.Tensor]]:
    """Causal LM examples from real text: the bytes of this ssnfx's own source."""
    source = Path(ssnfx.__file__).parent / "core" / "shared_model.py"
    data = torch.tensor(list(source.read_bytes()))
    rows = data[: n * length].view(n, length)
    return [{"input_ids": r, "labels": r} for r in rows]


def test_a_trainer_trains_checkpoints_and_resumes_a_shared_model(tmp_path):
    """An HF Trainer run on a shared model: its checkpoints carry the plan (save_pretrained),
    ssnfx.load reads them, and a resume from step 3 continues with the same losses."""
    pytest.importorskip("accelerate")
    rows = _text_rows(24)

    def run(resume: str | None = None) -> list[float]:
        torch.manual_seed(0)
        shared = ssnfx.share(MODELS["llama"][0](), 0.1)
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / "run"), max_steps=6, save_steps=3, logging_steps=1,
            per_device_train_batch_size=4, learning_rate=1e-2, report_to=[], use_cpu=True,
            seed=0, data_seed=0, dataloader_num_workers=0, disable_tqdm=True)
        trainer = transformers.Trainer(model=shared, args=args, train_dataset=rows)
        trainer.train(resume_from_checkpoint=resume)
        return [h["loss"] for h in trainer.state.log_history if "loss" in h]

    losses = run()
    assert len(losses) == 6 and losses[-1] < losses[0]
    checkpoint = tmp_path / "run" / "checkpoint-3"
    assert (checkpoint / "ssnfx_plan.json").is_file()
    again = ssnfx.load(MODELS["llama"][0](), checkpoint)
    assert isinstance(again, transformers.LlamaForCausalLM)
    resumed = run(str(checkpoint))
    assert resumed[-3:] == pytest.approx(losses[-3:], rel=1e-4)
    with pytest.raises(ssnfx.PlanError, match="ssnfx.load"):
        type(again).from_pretrained(checkpoint)


HF_MODEL_FILE = '''
import pathlib
import torch
import transformers
import ssnfx

config = transformers.LlamaConfig(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
    intermediate_size=128, vocab_size=256, max_position_embeddings=64, bos_token_id=0,
    eos_token_id=0, pad_token_id=0)
torch.manual_seed(0)
model = transformers.LlamaForCausalLM(config)
text = pathlib.Path(ssnfx.__file__).read_bytes()[:2048]
ids = torch.tensor(list(text)).view(-1, 32)
train_loader = [({"input_ids": ids[i:i + 8], "labels": ids[i:i + 8]}, ids[i:i + 8])
                for i in range(0, 64, 8)]
test_loader = train_loader[:2]
loss_fn = lambda out, targets: out.loss
example_inputs = {"input_ids": ids[:1], "use_cache": False}  # no cache object to export
'''


def test_the_command_line_on_a_hugging_face_model_file(tmp_path):
    """Keyword example inputs, the model's own loss, a test metric that does not apply (a
    note, after the checkpoint is written), and fold writing pt2 plus a save_pretrained
    folder that the class loads."""
    from test_cli import ssnfx as cli

    (tmp_path / "lm.py").write_text(HF_MODEL_FILE)
    out = cli("compile", "lm.py", "-b", "0.2", "--epochs", "1", "--no-search", "-o", "out",
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "test accuracy skipped" in out.stdout and "shape (8, 32, 256)" in out.stdout
    folded = cli("fold", "out", "--format", "pt2", cwd=tmp_path)
    assert folded.returncode == 0, folded.stderr
    assert (tmp_path / "out" / "model.pt2").is_file()
    again = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out" / "pretrained")
    program = torch.export.load(tmp_path / "out" / "model.pt2").module()
    ids = torch.randint(0, 256, (1, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(program(input_ids=ids, use_cache=False).logits,
                                   again(input_ids=ids).logits,
                                   rtol=1e-4, atol=1e-4)


def test_the_generate_benchmark_runs_quick():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_generate.py"
    spec = importlib.util.spec_from_file_location("bench_generate", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert "| Llama 64x2" in bench.main(["--quick"])


def test_a_folded_model_exports_to_pt2_and_says_when_torchscript_cannot(tmp_path):
    model, _, _ = _build("gpt2")
    folded = ssnfx.fold(ssnfx.share(model, 0.1).eval())
    ids = _ids()
    ssnfx.export(folded, {"input_ids": ids, "use_cache": False}, tmp_path / "m.pt2")
    program = torch.export.load(tmp_path / "m.pt2").module()
    with torch.no_grad():
        torch.testing.assert_close(program(input_ids=ids, use_cache=False).logits,
                                   folded(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(ssnfx.ExportError, match="pass use_cache=False"):
        ssnfx.export(folded, {"input_ids": ids}, tmp_path / "cache.pt2")
    with pytest.raises(ssnfx.ExportError, match="use format='pt2'"):
        ssnfx.export(folded, {"input_ids": ids, "use_cache": False}, tmp_path / "m.pt",
                     "torchscript")
    assert not (tmp_path / "cache.pt2").exists() and not (tmp_path / "m.pt").exists()
    vit, kwargs, _ = _build("vit")  # an image model: its pixels alone
    folded = ssnfx.fold(ssnfx.share(vit, 0.1).eval())
    ssnfx.export(folded, {"pixel_values": kwargs["pixel_values"]}, tmp_path / "vit.pt2")


def test_detr_keeps_its_frozen_backbone_outside_the_budget():
    """DETR freezes its backbone's early layers: they stay frozen and outside the budget (a
    BudgetError blamed norms and biases before)."""
    config = transformers.DetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False, backbone=None,
        backbone_config=transformers.ResNetConfig(
            embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
            out_features=["stage4"]),
        d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=10,
        num_labels=5)
    torch.manual_seed(0)
    model = transformers.DetrForObjectDetection(config).eval()
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    trainable = count_params(model) - frozen
    assert frozen > trainable  # most of this small DETR is its frozen backbone
    shared = ssnfx.share(model, 0.1).eval()
    plan = shared.ssnfx.plan
    assert plan.frozen_params == frozen and plan.budget == int(0.1 * trainable)
    assert sum(p.numel() for p in shared.parameters() if p.requires_grad) <= plan.budget
    assert f"frozen {frozen:,}" in ssnfx.summary(shared)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    folded = ssnfx.fold(shared)
    assert type(folded) is type(model)
    with torch.no_grad():
        torch.testing.assert_close(folded(pixel_values=x).logits, shared(pixel_values=x).logits,
                                   rtol=1e-5, atol=1e-5)
    type(model)(config).load_state_dict(folded.state_dict(), strict=True)


def test_whisper_generates_from_audio_features_on_the_shared_model():
    """A speech seq2seq model: generate() from input_features on the shared model gives the
    folded model's tokens; its frozen sinusoidal encoder positions stay out of the budget."""
    config = transformers.WhisperConfig(
        vocab_size=VOCAB, num_mel_bins=16, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, d_model=32, max_source_positions=32, max_target_positions=64,
        decoder_start_token_id=1, pad_token_id=0, eos_token_id=2, bos_token_id=1,
        suppress_tokens=None, begin_suppress_tokens=None)
    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    shared = ssnfx.share(model, 0.1).eval()
    assert isinstance(shared, type(model)) and shared.ssnfx.plan.frozen_params == 32 * 32
    features = torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = shared.generate(input_features=features, max_new_tokens=6, do_sample=False)
        folded = ssnfx.fold(shared)
        assert torch.equal(folded.generate(input_features=features, max_new_tokens=6,
                                           do_sample=False), tokens)
    type(model)(config).load_state_dict(folded.state_dict(), strict=True)
