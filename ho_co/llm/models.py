"""Where the causal LMs come from: `load_pretrained` (any Hugging Face causal LM, ready to
train) and `load_finetuned` (an output of `ho-co finetune`, in one call), with `save_finetuned`,
the writer of what `load_finetuned` reads.

Every fine-tuned directory holds the tokenizer and `ho_co_finetune.json` (method, base model,
the MethodSpec with the exact converted module names). The weights depend on the method:

- full, or any method saved with `merge=True`: a plain Hugging Face model
  (`save_pretrained`), loadable by `AutoModelForCausalLM.from_pretrained` as well.
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

from ho_co.llm.methods import MethodSpec, replay_c2q

META_FILE = "ho_co_finetune.json"
C2Q_WEIGHTS = "ho_co_model.safetensors"
QUANTA_DIR = "quanta_adapter"
FORMAT_VERSION = 1


def _base_reference(base_model: str) -> str:
    """A local directory is stored as an absolute path, so the reload works from anywhere."""
    path = Path(base_model)
    return str(path.resolve()) if path.is_dir() else base_model


def _dtype_name(model: nn.Module) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def restore_conv1d(model: nn.Module, names: list[str]) -> None:
    """Turn the merged `nn.Linear`s that were GPT-2 Conv1D back into Conv1D.

    replace_linear turned them into Linear ([out, in] weights); a plain HF checkpoint of GPT-2
    needs Conv1D's [in, out] layout, or `from_pretrained` would transpose them (silently, for
    square layers).
    """
    from transformers.pytorch_utils import Conv1D

    for name in names:
        linear = model.get_submodule(name)
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"{name}: expected an nn.Linear after merging, got {type(linear).__name__}")
        conv = Conv1D(linear.out_features, linear.in_features).to(linear.weight.device, linear.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(linear.weight.t())
            if linear.bias is not None:
                conv.bias.copy_(linear.bias)
            else:
                conv.bias.zero_()
        model.set_submodule(name, conv)


def save_finetuned(
    model: nn.Module,
    tokenizer,
    out_dir: str | Path,
    spec: MethodSpec,
    base_model: str,
    merge: bool = False,
) -> Path:
    """Write what `spec.method` needs to `out_dir` (see the module docstring); returns it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if merge and spec.method == "c2q":
        raise ValueError("c2q cannot be merged: HOLinear's high-order terms are not a Linear layer")
    merged = merge and spec.method in ("lora", "quanta")
    if spec.method == "lora" and merged:
        model = model.merge_and_unload()
    elif spec.method == "quanta" and merged:
        from ho_co.adapters import merge_and_unload

        model = merge_and_unload(model)
        restore_conv1d(model, spec.conv1d_modules)

    if spec.method == "full" or merged or spec.method == "lora":
        model.save_pretrained(out)  # LoRA unmerged: PeftModel writes only the adapter
    elif spec.method == "quanta":
        from ho_co.adapters import save_adapter

        save_adapter(model, out / QUANTA_DIR)
    else:  # c2q
        from safetensors.torch import save_model

        model.config.save_pretrained(out)
        save_model(model, str(out / C2Q_WEIGHTS))
    tokenizer.save_pretrained(out)
    meta = {
        "format_version": FORMAT_VERSION,
        "method": spec.method,
        "merged": merged,
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


def declare_causal_lm_loss(model: nn.Module) -> nn.Module:
    """Name the loss of a causal LM whose class name does not say so (GPT2LMHeadModel).

    transformers derives `loss_type` from the class name; for GPT-2 it finds none, and then
    the Trainer counts the label tokens before the causal shift, so every reported loss (and
    gradient) is scaled by (L - 1) / L (seen with transformers 5.23: eval loss 4.74 for a true
    4.82 with blocks of 64). Every model here is loaded as a causal LM, so the loss is known.
    """
    if getattr(model, "loss_type", "") is None:
        model.loss_type = "ForCausalLM"
    return model


def load_pretrained(name: str, dtype: str | torch.dtype = "float32"):
    """A Hugging Face causal LM and its tokenizer (local directory or hub name), ready to train.

    A tokenizer without a pad token (LLaMA, GPT-2) pads with EOS; padding goes to the right,
    where the attention mask and -100 labels hide it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except OSError as err:  # transformers' several-line "not a local folder and not a valid model identifier"
        raise FileNotFoundError(f"{name}: no local model directory of that name, and none loadable from the "
                                f"Hugging Face hub ({type(err).__name__})") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    return declare_causal_lm_loss(model), tokenizer


def load_finetuned(path: str | Path, base_model: str | None = None):
    """(model, tokenizer) from a directory written by `save_finetuned`, in one call.

    A directory without ho-co metadata loads as a plain Hugging Face model. `base_model`
    overrides the recorded base (LoRA and QuanTA adapters are applied on top of it).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model directory")
    meta = read_meta(path)
    if meta is None or meta["merged"] or meta["method"] == "full":
        model, tokenizer = load_pretrained(str(path), meta["dtype"] if meta else "float32")
        return model, tokenizer

    spec = MethodSpec(**meta["spec"])
    dtype = getattr(torch, meta["dtype"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = base_model or meta["base_model"]
    if spec.method in ("lora", "quanta") and Path(base).is_absolute() and not Path(base).is_dir():
        raise FileNotFoundError(
            f"{path / META_FILE}: the base model {base} of this {spec.method} adapter is gone; "
            "pass base_model= (--base-model) with its new location"
        )
    if spec.method == "c2q":
        config = AutoConfig.from_pretrained(path)
        model = declare_causal_lm_loss(AutoModelForCausalLM.from_config(config, dtype=dtype))
        replay_c2q(model, spec)
        from safetensors.torch import load_model

        load_model(model, str(path / C2Q_WEIGHTS), strict=True)
    elif spec.method == "lora":
        from peft import PeftModel

        base_lm = declare_causal_lm_loss(AutoModelForCausalLM.from_pretrained(base, dtype=dtype))
        model = PeftModel.from_pretrained(base_lm, path)
    else:  # quanta
        from ho_co.adapters import load_adapter

        base_lm = declare_causal_lm_loss(AutoModelForCausalLM.from_pretrained(base, dtype=dtype))
        model = load_adapter(base_lm, path / QUANTA_DIR)
    model.eval()
    return model, tokenizer
