"""Tiny local models and tokenizer: no hub access, real transformers code paths."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the hub

import pytest
import torch

CORPUS = [
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction:\nName a color.\n\n### Input:\nsky\n\n### Response:\nThe sky is blue.",
    "The quick brown fox jumps over the lazy dog. A cat sleeps on the warm mat.",
    "Question: What is two plus two?\nAnswer: four. The sun rises in the east and sets in the west.",
]

INSTRUCTIONS = [
    {"instruction": "Name a color.", "input": "", "output": "Blue."},
    {"instruction": "Add the numbers.", "input": "2 and 2", "output": "Four."},
    {"instruction": "Say hello.", "output": "Hello there, friend."},
    {"instruction": "Describe the fox.", "input": "quick brown fox", "output": "It jumps over the lazy dog."},
]

TEXT = " ".join(CORPUS) * 6


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    from ho_co.llm.tokenizer import train_tokenizer

    path = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(CORPUS, vocab_size=300, save_dir=path)
    return path


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def _save(model, tokenizer, path):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return _save(LlamaForCausalLM(config), tokenizer, tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return _save(GPT2LMHeadModel(config), tokenizer, tmp_path_factory.mktemp("gpt2"))


@pytest.fixture
def instructions():
    return [dict(r) for r in INSTRUCTIONS]


@pytest.fixture
def alpaca_jsonl(tmp_path):
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in INSTRUCTIONS))
    return path


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


# --- a tiny LLaMA as a GGUF file (what llama.cpp's converter writes), tokenizer included ---------

CHAT_TEMPLATE = ("{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")


def _permute_rows(weight, n_head):
    """llama.cpp's q/k row order (rotary pairs interleaved); transformers undoes it on load."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def write_llama_gguf(path, model, tokenizer, architecture="llama", weight_type="F16", odd_tensor=None):
    """`model` (a LlamaForCausalLM with tied embeddings) and `tokenizer` (byte-level BPE) as a GGUF
    file: the llama metadata, the tokenizer as llama.cpp stores it (tokens, merges, token types,
    special ids, chat template), the norms in F32 and the matrices in `weight_type`.
    `odd_tensor=(name, ggml type)` stores that tensor as zero bytes of another type."""
    import gguf
    import numpy as np

    config = model.config
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(config.hidden_size // n_head)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    specials = set(tokenizer.all_special_tokens)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_token_types([3 if t in specials else 1 for t in tokens])  # 3: control
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(CHAT_TEMPLATE)

    weights = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    matrix = np.float16 if weight_type == "F16" else np.float32

    def add(name, array, is_matrix=True):
        if odd_tensor and name == odd_tensor[0]:
            qtype = gguf.GGMLQuantizationType[odd_tensor[1]]
            block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
            raw = np.zeros((*array.shape[:-1], array.shape[-1] // block * block_bytes), dtype=np.uint8)
            writer.add_tensor(name, raw, raw_dtype=qtype)  # the shape in bytes: the writer derives the rest
        else:
            writer.add_tensor(name, array.astype(matrix if is_matrix else np.float32))

    add("token_embd.weight", weights["model.embed_tokens.weight"])
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        add(f"blk.{i}.attn_norm.weight", weights[p + "input_layernorm.weight"], False)
        add(f"blk.{i}.attn_q.weight", _permute_rows(weights[p + "self_attn.q_proj.weight"], n_head))
        add(f"blk.{i}.attn_k.weight", _permute_rows(weights[p + "self_attn.k_proj.weight"], n_kv))
        add(f"blk.{i}.attn_v.weight", weights[p + "self_attn.v_proj.weight"])
        add(f"blk.{i}.attn_output.weight", weights[p + "self_attn.o_proj.weight"])
        add(f"blk.{i}.ffn_norm.weight", weights[p + "post_attention_layernorm.weight"], False)
        add(f"blk.{i}.ffn_gate.weight", weights[p + "mlp.gate_proj.weight"])
        add(f"blk.{i}.ffn_up.weight", weights[p + "mlp.up_proj.weight"])
        add(f"blk.{i}.ffn_down.weight", weights[p + "mlp.down_proj.weight"])
    add("output_norm.weight", weights["model.norm.weight"], False)  # no output.weight: tied to token_embd
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def gguf_source(tmp_path_factory, tokenizer):
    """(GGUF file, the same model as a Hugging Face folder with the F16-rounded weights the file holds)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        rms_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.copy_(p.half().float())
            else:  # norms away from 1, so a wrong mapping shows
                p.uniform_(0.5, 1.5)
    folder = tmp_path_factory.mktemp("gguf_source")
    path = write_llama_gguf(folder / "tiny-llama.F16.gguf", model, tokenizer)
    reference = _save(model, tokenizer, tmp_path_factory.mktemp("gguf_reference"))
    return path, reference


@pytest.fixture(scope="session")
def gguf_writer():
    """`write_llama_gguf`, for tests that write GGUF files of their own."""
    return write_llama_gguf


@pytest.fixture
def gguf_cache(tmp_path, monkeypatch):
    """An empty cache of dequantized GGUF files for one test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HO_CO_CACHE_DIR", str(cache))
    return cache / "gguf"
