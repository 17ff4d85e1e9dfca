"""The four fine-tuning methods, applied to a Hugging Face causal LM in place.

- c2q:    compatible conversion of the chosen linear layers to HOLinear (same function at
          start, `ho_scale` = 0), then every weight of the model trains (C2Q-SFT, the
          counterpart of full SFT).
- quanta: QuanTA adapters on the chosen layers (ho_co.adapters), base frozen.
- lora:   PEFT's own LoRA (`get_peft_model`), base frozen.
- full:   plain full fine-tuning, the baseline.

Targets default to every linear layer except the output head (PEFT's "all-linear"). Patterns
are resolved once, by `ho_co.replace_linear`'s rules (glob, dotted suffix, regex; GPT-2's Conv1D
`c_attn`/`c_proj`/`c_fc` included), into exact module names, and every method gets those names
(LoRA as PEFT's `target_modules` list), so one pattern adapts the same layers whatever the method.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from torch import nn

from ho_co.replace import replace_linear

METHODS = ("c2q", "quanta", "lora", "full")


@dataclass
class MethodSpec:
    """Everything needed to apply a method again (saved with the model, used again on load)."""

    method: str
    target_modules: list[str] | None = None
    exclude_modules: list[str] | None = None
    order: int = 2  # c2q: HOLinear order K
    dims: list[int] | None = None  # quanta: axis sizes of the reshaped features (None: automatic)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    replaced: list[str] = field(default_factory=list)  # filled by apply_method (c2q, quanta)
    conv1d_modules: list[str] = field(default_factory=list)  # those of `replaced` that were Conv1D

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.method == "c2q" and (not isinstance(self.order, int) or self.order < 2):
            raise ValueError(f"c2q needs a HOLinear order >= 2 (order 1 is the plain Linear), got {self.order!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def output_head_names(model: nn.Module) -> list[str]:
    """Name(s) of the output projection (lm_head): never a default target, often tied."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [name for name, module in model.named_modules() if head is not None and module is head]


def target_names(model: nn.Module, spec: MethodSpec) -> list[str]:
    """The modules `spec` adapts: its target patterns resolved by replace_linear's rules, minus
    its exclude patterns and the output head. Raises ValueError when that leaves none."""
    exclude = list(spec.exclude_modules or []) + output_head_names(model)
    chosen = replace_linear(model, lambda linear: linear, spec.target_modules, exclude, dry_run=True)
    if not chosen.entries:
        raise ValueError(f"{spec.method}: target_modules {spec.target_modules} and exclude_modules "
                         f"{spec.exclude_modules} (and the output head) leave no linear layer to adapt")
    return [entry.name for entry in chosen.entries]


def _exactly(names: list[str]) -> list[re.Pattern]:
    """replace_linear patterns selecting exactly the modules `names`."""
    return [re.compile(re.escape(name)) for name in names]


def apply_method(model: nn.Module, spec: MethodSpec) -> nn.Module:
    """Apply `spec` to `model`; returns the model to train (a PeftModel for LoRA).

    Fills `spec.replaced` with the converted module names, so a reload converts exactly them.
    Raises ValueError when the targets select nothing.
    """
    if spec.method == "full":
        model.requires_grad_(True)
        return model
    names = target_names(model, spec)
    if spec.method == "lora":
        return _apply_lora(model, spec, names)
    report = _convert(model, spec, _exactly(names))
    spec.replaced = [entry.name for entry in report.replaced]
    spec.conv1d_modules = [entry.name for entry in report.replaced if entry.old_type == "Conv1D"]
    print(report)
    return model


def replay_c2q(model: nn.Module, spec: MethodSpec) -> nn.Module:
    """Convert exactly the modules named in `spec.replaced` again (loading a saved c2q model)."""
    if spec.method != "c2q":
        raise ValueError(f"replay_c2q needs a c2q spec, got {spec.method!r}")
    report = _convert(model, spec, _exactly(spec.replaced))
    if sorted(e.name for e in report.replaced) != sorted(spec.replaced):
        raise ValueError(f"could not convert again the modules {spec.replaced}:\n{report}")
    return model


def _convert(model: nn.Module, spec: MethodSpec, targets: list[re.Pattern]):
    """c2q or QuanTA on the layers `targets` select; returns the ReplaceReport."""
    from ho_co.adapters import apply_holinear, apply_quanta

    if spec.method == "quanta":
        return apply_quanta(model, targets, dims=spec.dims)
    report = apply_holinear(model, targets, order=spec.order, train="all")
    model.requires_grad_(True)  # C2Q-SFT: the converted model is fine-tuned as a whole
    return report


def _apply_lora(model: nn.Module, spec: MethodSpec, names: list[str]) -> nn.Module:
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
