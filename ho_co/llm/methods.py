"""The four fine-tuning methods, applied to a Hugging Face causal LM in place.

- c2q:    compatible conversion of the chosen linear layers to HOLinear (same function at
          start, `ho_scale` = 0), then every weight of the model trains (C2Q-SFT, the
          counterpart of full SFT).
- quanta: QuanTA adapters on the chosen layers (ho_co.adapters), base frozen.
- lora:   PEFT's own LoRA (`get_peft_model`), base frozen.
- full:   plain full fine-tuning, the baseline.

Each method is one `Method` object in `METHODS` (name -> object): its usual learning rate,
how it applies to a model, whether and how it merges, how it is saved and loaded again. The
command line takes its method choices and default learning rates from there. Importing this
module costs no torch: the methods import what they need when they run.

Targets default to every linear layer except the output head (PEFT's "all-linear"). Patterns
are resolved once, by `ho_co.replace_linear`'s rules (glob, dotted suffix, regex; GPT-2's Conv1D
`c_attn`/`c_proj`/`c_fc` included), into exact module names, and every method gets those names
(LoRA as PEFT's `target_modules` list), so one pattern adapts the same layers whatever the method.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ho_co.adapters import AdapterConfig

log = logging.getLogger(__name__)


@dataclass
class MethodSpec:
    """Everything needed to apply a method again (saved with the model, used again on load)."""

    method: str = field(metadata={"help": "the fine-tuning method"})
    target_modules: list[str] | None = field(
        default=None, metadata={"help": "module name patterns (default: all linear but lm_head)"})
    exclude_modules: list[str] | None = field(default=None, metadata={"help": "module name patterns to leave alone"})
    order: int = field(default=2, metadata={"help": "c2q: HOLinear order K"})
    dims: list[int] | None = field(
        default=None, metadata={"help": "quanta: axis sizes of the features (default automatic)"})
    lora_r: int = field(default=8, metadata={"help": "lora: rank"})
    lora_alpha: int = field(default=16, metadata={"help": "lora: scaling alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "lora: dropout on the adapter's input"})
    replaced: list[str] = field(  # the converted module names, so a reload converts exactly them
        default_factory=list, metadata={"result": "filled in by apply_method (c2q, quanta)"})
    conv1d_modules: list[str] = field(  # those of `replaced` that were GPT-2 Conv1D
        default_factory=list, metadata={"result": "filled in by apply_method (c2q, quanta)"})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        METHODS[self.method].check(self)

    def to_dict(self) -> dict:
        return asdict(self)


def output_head_names(model: nn.Module) -> list[str]:
    """Name(s) of the output projection (lm_head): never a default target, often tied."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [name for name, module in model.named_modules() if head is not None and module is head]


def target_names(model: nn.Module, spec: MethodSpec) -> list[str]:
    """The modules `spec` adapts: its target patterns resolved by replace_linear's rules, minus
    its exclude patterns and the output head. Raises ValueError when that leaves none."""
    from ho_co.replace import replace_linear

    exclude = list(spec.exclude_modules or []) + output_head_names(model)
    chosen = replace_linear(model, lambda linear: linear, spec.target_modules, exclude, dry_run=True)
    if not chosen.entries:
        raise ValueError(f"{spec.method}: target_modules {spec.target_modules} and exclude_modules "
                         f"{spec.exclude_modules} (and the output head) leave no linear layer to adapt")
    return [entry.name for entry in chosen.entries]


def declare_causal_lm_loss(model: nn.Module) -> nn.Module:
    """Name the loss of a causal LM whose class name does not say so (GPT2LMHeadModel).

    transformers derives `loss_type` from the class name; for GPT-2 it finds none, and then
    the Trainer counts the label tokens before the causal shift, so every reported loss (and
    gradient) is scaled by (L - 1) / L (BENCHMARKS.md has the numbers). Every model here is
    loaded as a causal LM, so the loss is known.
    """
    if getattr(model, "loss_type", "") is None:
        model.loss_type = "ForCausalLM"
    return model


def _pretrained(name: str | Path, dtype: torch.dtype) -> nn.Module:
    from transformers import AutoModelForCausalLM

    from ho_co.llm.sources import model_source  # a GGUF base: its dequantized copy

    return declare_causal_lm_loss(AutoModelForCausalLM.from_pretrained(model_source(name), dtype=dtype))


class Method:
    """One fine-tuning method. `adapter`: it trains a small update beside the frozen base, saved
    without the base (loaded onto it again) and mergeable into it."""

    name: ClassVar[str]
    lr: ClassVar[float]  # the usual learning rate
    adapter: ClassVar[bool] = False

    def check(self, spec: MethodSpec) -> None:
        """Raise ValueError for a spec this method cannot apply."""

    def apply(self, model: nn.Module, spec: MethodSpec) -> nn.Module:
        """The model to train, `spec`'s targets adapted (recorded in the spec where needed)."""
        return self.adapt(model, spec, target_names(model, spec))

    def adapt(self, model: nn.Module, spec: MethodSpec, names: list[str]) -> nn.Module:
        raise NotImplementedError

    def merge(self, model: nn.Module, spec: MethodSpec) -> nn.Module | None:
        """The model with the adapter folded in, a plain Hugging Face model; None where there is
        nothing to fold (the model is plain already)."""
        return None

    def save(self, model: nn.Module, out: Path, spec: MethodSpec) -> None:
        """Write the trained model's weights (the tokenizer and metadata are written beside)."""
        model.save_pretrained(out)

    def load(self, path: Path, spec: MethodSpec, base_model: str, dtype: torch.dtype) -> nn.Module:
        """The model `save` wrote to `path` (adapters: applied to `base_model` again)."""
        raise NotImplementedError


class Full(Method):
    name, lr = "full", 2e-5  # small learning rates for updating all weights

    def apply(self, model: nn.Module, spec: MethodSpec) -> nn.Module:
        return model.requires_grad_(True)

    def save(self, model: nn.Module, out: Path, spec: MethodSpec) -> None:
        from ho_co.llm.sources import save_plain  # also a model loaded from GGUF

        save_plain(model, out)

    def load(self, path: Path, spec: MethodSpec, base_model: str, dtype: torch.dtype) -> nn.Module:
        return _pretrained(path, dtype)


class _Converted(Method):
    """c2q and quanta: ho_co.adapters on the target layers, the converted names recorded."""

    def layer_config(self, spec: MethodSpec) -> AdapterConfig:
        raise NotImplementedError

    def adapt(self, model: nn.Module, spec: MethodSpec, names: list[str]) -> nn.Module:
        from ho_co.adapters import apply_adapter

        report = apply_adapter(model, self.layer_config(spec), names=names)
        spec.replaced = [entry.name for entry in report.replaced]
        spec.conv1d_modules = [entry.name for entry in report.replaced if entry.old_type == "Conv1D"]
        log.info("%s", report)
        return model


class C2Q(_Converted):
    name, lr = "c2q", 2e-5
    weights_file = "ho_co_model.safetensors"  # not model.safetensors: never loaded as the unconverted model

    def check(self, spec: MethodSpec) -> None:
        if not isinstance(spec.order, int) or spec.order < 2:
            raise ValueError(f"c2q needs a HOLinear order >= 2 (order 1 is the plain Linear), got {spec.order!r}")

    def layer_config(self, spec: MethodSpec) -> AdapterConfig:
        from ho_co.adapters import HOLinearConfig

        return HOLinearConfig(order=spec.order, train="all")

    def adapt(self, model: nn.Module, spec: MethodSpec, names: list[str]) -> nn.Module:
        super().adapt(model, spec, names)
        return model.requires_grad_(True)  # C2Q-SFT: the converted model is fine-tuned as a whole

    def merge(self, model: nn.Module, spec: MethodSpec) -> nn.Module | None:
        raise ValueError("c2q cannot be merged: HOLinear's high-order terms are not a Linear layer")

    def save(self, model: nn.Module, out: Path, spec: MethodSpec) -> None:
        from safetensors.torch import save_model

        from ho_co.llm.sources import plain_config

        plain_config(model.config).save_pretrained(out)  # no quantization settings of a GGUF source
        save_model(model, str(out / self.weights_file))

    def load(self, path: Path, spec: MethodSpec, base_model: str, dtype: torch.dtype) -> nn.Module:
        """HOLinear is no transformers layer: the model is built from the config, the recorded
        modules converted again, and the state dict loaded strictly."""
        from safetensors.torch import load_model
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(path)
        model = declare_causal_lm_loss(AutoModelForCausalLM.from_config(config, dtype=dtype))
        replay_c2q(model, spec)
        load_model(model, str(path / self.weights_file), strict=True)
        return model


class QuanTA(_Converted):
    name, lr, adapter = "quanta", 2e-4, True  # larger learning rates for adapters trained from zero
    folder = "quanta_adapter"

    def layer_config(self, spec: MethodSpec) -> AdapterConfig:
        from ho_co.adapters import QuanTAConfig

        return QuanTAConfig(dims=spec.dims)

    def merge(self, model: nn.Module, spec: MethodSpec) -> nn.Module:
        from ho_co.adapters import merge_and_unload
        from ho_co.replace import as_conv1d

        model = merge_and_unload(model)
        for name in spec.conv1d_modules:  # GPT-2's checkpoint layout
            model.set_submodule(name, as_conv1d(model.get_submodule(name)))
        return model

    def save(self, model: nn.Module, out: Path, spec: MethodSpec) -> None:
        from ho_co.adapters import save_adapter

        save_adapter(model, out / self.folder)

    def load(self, path: Path, spec: MethodSpec, base_model: str, dtype: torch.dtype) -> nn.Module:
        from ho_co.adapters import load_adapter

        return load_adapter(_pretrained(base_model, dtype), path / self.folder)


class LoRA(Method):
    name, lr, adapter = "lora", 2e-4, True

    def adapt(self, model: nn.Module, spec: MethodSpec, names: list[str]) -> nn.Module:
        """PEFT's LoRA on exactly `names` (PEFT matches a list entry as the name or a dotted suffix)."""
        from peft import LoraConfig, TaskType, get_peft_model

        config = LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=spec.lora_r,
            lora_alpha=spec.lora_alpha,
            lora_dropout=spec.lora_dropout,
            target_modules=names,
        )
        peft_model = get_peft_model(model, config)
        adapted = peft_model.base_model.targeted_module_names
        if sorted(adapted) != sorted(names):  # a full name that is also the suffix of a deeper one
            raise ValueError(f"lora: PEFT adapted {sorted(adapted)}, not exactly the targets {sorted(names)}")
        return peft_model

    def merge(self, model: nn.Module, spec: MethodSpec) -> nn.Module:
        return model.merge_and_unload()

    # save: PeftModel.save_pretrained writes only the adapter

    def load(self, path: Path, spec: MethodSpec, base_model: str, dtype: torch.dtype) -> nn.Module:
        from peft import PeftModel

        return PeftModel.from_pretrained(_pretrained(base_model, dtype), path)


METHODS: dict[str, Method] = {method.name: method for method in (C2Q(), QuanTA(), LoRA(), Full())}


def apply_method(model: nn.Module, spec: MethodSpec) -> nn.Module:
    """Apply `spec` to `model`; returns the model to train (a PeftModel for LoRA).

    Fills `spec.replaced` with the converted module names, so a reload converts exactly them.
    Raises ValueError when the targets select nothing.
    """
    return METHODS[spec.method].apply(model, spec)


def replay_c2q(model: nn.Module, spec: MethodSpec) -> nn.Module:
    """Convert exactly the modules named in `spec.replaced` again (loading a saved c2q model)."""
    from ho_co.adapters import apply_adapter

    if spec.method != "c2q":
        raise ValueError(f"replay_c2q needs a c2q spec, got {spec.method!r}")
    report = apply_adapter(model, METHODS["c2q"].layer_config(spec), names=spec.replaced)
    if sorted(e.name for e in report.replaced) != sorted(spec.replaced):
        raise ValueError(f"could not convert again the modules {spec.replaced}:\n{report}")
    return model.requires_grad_(True)
