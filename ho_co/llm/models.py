"""Where the causal LMs come from: `load_pretrained` (any Hugging Face causal LM, a GGUF file
or a packaged model, see `ho_co.llm.sources`; ready to train) and `load_finetuned` (an output of
`ho-co finetune`, in one call), with `save_finetuned`, the writer of what `load_finetuned` reads.

Every fine-tuned directory holds the tokenizer and `ho_co_finetune.json` (method, base model,
the MethodSpec with the exact converted module names). The weights are the method's
(`ho_co.llm.methods`, each method's `save` and `load`):

- full, or any method saved with `merge=True`: a plain Hugging Face model
  (`sources.save_plain`, also for a model loaded from GGUF), loadable by
  `AutoModelForCausalLM.from_pretrained` as well.
- lora: PEFT's adapter files (`adapter_config.json`, `adapter_model.safetensors`).
- quanta: `quanta_adapter/` (`ho_co.adapters.save_adapter`: the gates and which modules
  carry them), applied to the base model again by `load_adapter`.
- c2q: the base `config.json` and `ho_co_model.safetensors`, the converted state dict.
  HOLinear is no transformers layer, so the loader builds the model from the config, converts
  the recorded modules again and loads the state dict strictly. The file is deliberately not
  called `model.safetensors`, so `from_pretrained` cannot silently load it into the
  unconverted (for GPT-2: transposed Conv1D) architecture.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ho_co.llm.methods import METHODS, MethodSpec, declare_causal_lm_loss
from ho_co.llm.sources import model_reference, model_source, save_plain

META_FILE = "ho_co_finetune.json"
FORMAT_VERSION = 1


def _base_reference(base_model: str) -> str:
    """A local directory or GGUF file is stored as an absolute path, so the reload works from anywhere."""
    return model_reference(base_model)


def _dtype_name(model: nn.Module) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def save_finetuned(
    model: nn.Module,
    tokenizer,
    out_dir: str | Path,
    spec: MethodSpec,
    base_model: str,
    merge: bool = False,
) -> Path:
    """Write what `spec.method` needs to `out_dir` (see the module docstring); returns it."""
    method = METHODS[spec.method]
    merged_model = method.merge(model, spec) if merge else None  # c2q refuses
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if merged_model is None:
        for config in getattr(model, "peft_config", {}).values():  # PEFT's files name the base as we do,
            config.base_model_name_or_path = _base_reference(base_model)  # not by its dequantized cache
        method.save(model, out, spec)
    else:
        model = merged_model
        save_plain(model, out)
    tokenizer.save_pretrained(out)
    meta = {
        "format_version": FORMAT_VERSION,
        "method": spec.method,
        "merged": merged_model is not None,
        "base_model": _base_reference(base_model),
        "dtype": _dtype_name(model),
        "spec": spec.to_dict(),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def read_meta(path: str | Path) -> dict | None:
    """The ho-co metadata of a saved directory, or None for a plain Hugging Face model."""
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    for key in ("format_version", "method", "merged", "base_model", "dtype", "spec"):
        if key not in meta:
            raise ValueError(f"{meta_path}: missing key {key!r}")
    if meta["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{meta_path}: format_version {meta['format_version']}, this ho-co reads {FORMAT_VERSION}")
    return meta


def load_tokenizer(name: str):
    """A Hugging Face tokenizer ready for training batches: a tokenizer without a pad token
    (LLaMA, GPT-2) pads with EOS; padding goes to the right, where the attention mask and
    -100 labels hide it. `name`: a folder, hub name, GGUF file or packaged model."""
    from transformers import AutoTokenizer

    name = model_source(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except OSError as err:  # transformers' several-line "not a local folder and not a valid model identifier"
        raise FileNotFoundError(f"{name}: no local model directory of that name, and none loadable from the "
                                f"Hugging Face hub ({type(err).__name__})") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_pretrained(name: str, dtype: str | torch.dtype = "float32"):
    """A Hugging Face causal LM and its tokenizer (`load_tokenizer`; local directory, hub name,
    GGUF file or packaged model: `sources.model_source`), ready to train."""
    from transformers import AutoModelForCausalLM

    name = model_source(name)  # a GGUF file: its dequantized copy in the cache
    tokenizer = load_tokenizer(name)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    return declare_causal_lm_loss(model), tokenizer


def load_finetuned(path: str | Path, base_model: str | None = None):
    """(model, tokenizer) from a directory written by `save_finetuned`, in one call.

    A directory without ho-co metadata loads as a plain Hugging Face model, and so does anything
    `load_pretrained` takes (a GGUF file, a packaged model, a hub name). `base_model` overrides
    the recorded base (LoRA and QuanTA adapters are applied on top of it).
    """
    path = Path(path)
    if not path.is_dir():
        return load_pretrained(str(path))
    meta = read_meta(path)
    if meta is None or meta["merged"]:
        return load_pretrained(str(path), meta["dtype"] if meta else "float32")

    spec = MethodSpec(**meta["spec"])
    method = METHODS[spec.method]
    tokenizer = load_tokenizer(str(path))
    base = base_model or meta["base_model"]
    if method.adapter and Path(base).is_absolute() and not Path(base).exists():
        raise FileNotFoundError(
            f"{path / META_FILE}: the base model {base} of this {spec.method} adapter is gone; "
            "pass base_model= (--base-model) with its new location"
        )
    model = method.load(path, spec, base, getattr(torch, meta["dtype"]))
    model.eval()
    return model, tokenizer
