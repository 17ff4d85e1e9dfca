"""Each method on tiny LLaMA and GPT-2 models: conversion, one Trainer step, save/load/merge."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from ho_co import HOLinear
from ho_co.layers import QuanTALinear
from ho_co.llm.data import load_examples, make_collator
from ho_co.llm.finetune import FinetuneConfig, build_trainer
from ho_co.llm.methods import METHODS, MethodSpec, apply_method
from ho_co.llm.models import load_finetuned, load_pretrained, read_meta, save_finetuned
from model_outputs import logits, loss, perturb_trainable


def batch_of(examples, tokenizer):
    return make_collator(tokenizer)(examples)


@pytest.fixture
def model_dir(request, arch):
    return request.getfixturevalue(f"{arch}_dir")


@pytest.fixture
def loaded(model_dir, alpaca_jsonl):
    model, tokenizer = load_pretrained(str(model_dir))
    examples = load_examples(alpaca_jsonl, tokenizer, 256)
    return model, tokenizer, examples, batch_of(examples, tokenizer)


BOTH = pytest.mark.parametrize("arch", ["llama", "gpt2"])
# Our own code paths (c2q, QuanTA, Conv1D handling) on both architectures; LoRA and full
# fine-tuning are PEFT's and transformers' own, exercised once per architecture at most.
TRAIN_CASES = [("llama", m) for m in METHODS] + [("gpt2", "c2q"), ("gpt2", "quanta")]
ROUND_TRIP_CASES = [("gpt2", m) for m in METHODS] + [("llama", "c2q"), ("llama", "quanta")]


@BOTH
@pytest.mark.parametrize("order", [2, 4])
def test_c2q_conversion_leaves_logits_unchanged(loaded, order):
    model, _, _, batch = loaded
    before = logits(model, batch)
    spec = MethodSpec("c2q", order=order)
    apply_method(model, spec)
    converted = {n for n, m in model.named_modules() if isinstance(m, HOLinear)}
    assert converted == set(spec.replaced) and len(converted) >= 4
    assert not any("lm_head" in n for n in converted)  # the output head is never a default target
    torch.testing.assert_close(logits(model, batch), before, atol=1e-5, rtol=1e-5)
    assert all(p.requires_grad for p in model.parameters())  # C2Q-SFT trains the whole model


def test_gpt2_conv1d_targets(gpt2_dir, caplog, capsys):
    model, _ = load_pretrained(str(gpt2_dir))
    spec = MethodSpec("quanta", target_modules=["c_attn", "mlp.c_proj"])
    with caplog.at_level("INFO", logger="ho_co"):
        apply_method(model, spec)
    assert "replaced 2 module(s)" in caplog.text and capsys.readouterr().out == ""  # logged, not printed
    assert spec.replaced == spec.conv1d_modules == ["transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_proj"]
    assert isinstance(model.transformer.h[0].attn.c_attn, QuanTALinear)
    assert type(model.transformer.h[0].attn.c_proj).__name__ == "Conv1D"  # attn.c_proj not targeted


@pytest.mark.parametrize("arch, patterns, expected", [
    # a glob, and a plain name matched as a dotted suffix (a glob means nothing to PEFT's own matching)
    ("llama", ["*.mlp.*_proj", "q_proj"], ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "self_attn.q_proj"]),
    ("gpt2", ["c_attn", "*.mlp.c_*"], ["attn.c_attn", "mlp.c_fc", "mlp.c_proj"]),  # Conv1D; not attn.c_proj
])
def test_every_method_adapts_the_same_layers(model_dir, arch, patterns, expected):
    prefix = "model.layers.0." if arch == "llama" else "transformer.h.0."
    adapted = {}
    for method in ("c2q", "quanta", "lora"):
        model, _ = load_pretrained(str(model_dir))
        model = apply_method(model, MethodSpec(method, target_modules=patterns, exclude_modules=["down_proj"]))
        if method == "lora":
            from peft.tuners.lora import LoraLayer

            adapted[method] = {n for n, m in model.base_model.model.named_modules() if isinstance(m, LoraLayer)}
        else:
            layer = HOLinear if method == "c2q" else QuanTALinear
            adapted[method] = {n for n, m in model.named_modules() if isinstance(m, layer)}
    want = {prefix + name for name in expected if not name.endswith("down_proj")}
    assert adapted == {"c2q": want, "quanta": want, "lora": want}


def test_targets_matching_nothing_fail(llama_dir):
    model, _ = load_pretrained(str(llama_dir))
    with pytest.raises(ValueError, match="c_attn"):
        apply_method(model, MethodSpec("c2q", target_modules=["c_attn"]))
    with pytest.raises(ValueError, match="unknown method 'dora'"):
        MethodSpec("dora")
    with pytest.raises(ValueError, match="order >= 2"):
        MethodSpec("c2q", order=1)


@pytest.mark.parametrize("arch, method", TRAIN_CASES)
def test_one_training_step_lowers_the_loss(loaded, method, tmp_path):
    model, tokenizer, examples, batch = loaded
    spec = MethodSpec(method)
    model = apply_method(model, spec)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = loss(model, batch)
    config = FinetuneConfig(model="-", data="-", output=str(tmp_path), spec=spec, max_steps=1,
                            batch_size=len(examples), lr=1e-2, save_steps=10, use_cpu=True)
    build_trainer(model, tokenizer, examples, config).train()
    assert loss(model, batch) < before - 1e-3
    if method in ("quanta", "lora"):
        assert frozen, "adapters must freeze the base model"
        for name, p in model.named_parameters():
            if name in frozen:
                torch.testing.assert_close(p, frozen[name], rtol=0, atol=0, msg=f"{name} changed")
    if method == "c2q":
        scales = [m.ho_scale for m in model.modules() if isinstance(m, HOLinear)]
        assert all(s.abs().max() > 0 for s in scales)  # the high orders started to grow


@pytest.mark.parametrize("arch, method", ROUND_TRIP_CASES)
def test_save_load_round_trip_gives_the_same_logits(loaded, model_dir, method, tmp_path):
    model, tokenizer, _, batch = loaded
    spec = MethodSpec(method)
    model = apply_method(model, spec)
    perturb_trainable(model)
    expected = logits(model, batch)
    save_finetuned(model, tokenizer, tmp_path / "out", spec, str(model_dir))
    assert read_meta(tmp_path / "out")["method"] == method
    reloaded, tok = load_finetuned(tmp_path / "out")
    assert tok("hello world")["input_ids"] == tokenizer("hello world")["input_ids"]
    torch.testing.assert_close(logits(reloaded, batch), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits(AutoModelForCausalLM.from_pretrained(model_dir), batch), expected, atol=1e-3)


@pytest.mark.parametrize("arch, method", [("gpt2", "quanta"), ("gpt2", "lora"), ("llama", "quanta")])
def test_merged_save_is_a_plain_hf_model_with_the_same_logits(loaded, model_dir, method, tmp_path):
    model, tokenizer, _, batch = loaded
    spec = MethodSpec(method)
    model = apply_method(model, spec)
    perturb_trainable(model)
    expected = logits(model, batch)
    save_finetuned(model, tokenizer, tmp_path / "merged", spec, str(model_dir), merge=True)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")  # no ho-co, no PEFT needed
    assert not any(isinstance(m, QuanTALinear) for m in plain.modules())
    torch.testing.assert_close(logits(plain, batch), expected, atol=1e-4, rtol=1e-4)
    reloaded, _ = load_finetuned(tmp_path / "merged")
    torch.testing.assert_close(logits(reloaded, batch), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama"])
def test_quanta_adapter_on_a_moved_base(loaded, model_dir, tmp_path):
    import shutil

    model, tokenizer, _, batch = loaded
    spec = MethodSpec("quanta")
    apply_method(model, spec)
    perturb_trainable(model, seed=1)
    expected = logits(model, batch)
    moved = tmp_path / "base"
    shutil.copytree(model_dir, moved)
    save_finetuned(model, tokenizer, tmp_path / "adapter", spec, str(moved))
    shutil.rmtree(moved)
    with pytest.raises(FileNotFoundError, match="base model .*base of this quanta adapter is gone"):
        load_finetuned(tmp_path / "adapter")
    reloaded, _ = load_finetuned(tmp_path / "adapter", base_model=str(model_dir))
    torch.testing.assert_close(logits(reloaded, batch), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2"])
def test_c2q_cannot_merge_and_is_not_loadable_as_plain_hf(loaded, model_dir, tmp_path):
    model, tokenizer, _, _ = loaded
    spec = MethodSpec("c2q")
    apply_method(model, spec)
    with pytest.raises(ValueError, match="c2q cannot be merged"):
        save_finetuned(model, tokenizer, tmp_path / "c2q", spec, str(model_dir), merge=True)
    save_finetuned(model, tokenizer, tmp_path / "c2q", spec, str(model_dir))
    with pytest.raises(OSError):  # never silently the unconverted architecture
        AutoModelForCausalLM.from_pretrained(tmp_path / "c2q")


@pytest.mark.parametrize("arch", ["gpt2"])
def test_trainer_eval_loss_is_the_model_loss(loaded, text_file, tmp_path):
    """GPT-2's class name hides its causal loss from the Trainer's token count (see
    methods.declare_causal_lm_loss); without the fix this is off by a factor (L - 1) / L."""
    model, tokenizer, _, _ = loaded
    from ho_co.llm.data import encode_text_blocks

    blocks = encode_text_blocks(text_file, tokenizer, 16)[:8]
    direct = loss(model, make_collator(tokenizer)(blocks))
    config = FinetuneConfig(model="-", data="-", output=str(tmp_path), spec=MethodSpec("full"), batch_size=8,
                            use_cpu=True)
    trainer = build_trainer(model, tokenizer, blocks, config, eval_examples=blocks)
    assert trainer.evaluate()["eval_loss"] == pytest.approx(direct, rel=1e-4)
