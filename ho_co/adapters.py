"""Model-level adapter API in PEFT's style, for QuanTA and HOLinear conversion.

    report = apply_quanta(model, ["q_proj", "v_proj"])   # or apply_holinear(model, ..., order=2)
    print_trainable_parameters(model)                    # trainable params: ... || all params: ...
    ...train...
    save_adapter(model, "out/adapter")                   # adapter_model.safetensors + adapter_config.json
    load_adapter(fresh_base_model, "out/adapter")        # re-applies, loads, strict
    model = merge_and_unload(model)                      # plain nn.Linear again, zero overhead

Like PEFT, `apply_*` freezes the whole model except the adapters' own tensors (unfreeze a
head yourself afterwards if you want it to train), `target_modules` are PEFT-style patterns
(dotted suffix, glob or compiled regex; see `ho_co.replace`), and the files carry PEFT's
names. Unlike PEFT, the model is modified in place (no wrapper class) and each adapted layer
carries its own configuration, so several calls (even QuanTA on some layers and HOLinear on
others) compose, and a model wrapped later (e.g. in a LightningModule) still saves.

Why not a PEFT method: PEFT's extension hook, `peft.utils.register_peft_method`, accepts only
names already in its closed `PeftType` enum (adding one means patching PEFT's source), and
PEFT would make transformers a dependency of the routing models, which need neither.

Adapter tensors, per adapted layer:
- QuanTALinear: the gates `quanta_T.<i>` (trained) and their frozen copies `quanta_S.<i>`
  (saved too: the layer computes base + T - S, so S is part of the adapter).
- HOLinear made by `from_linear` (it has `ho_scale`): `ho_scale`, plus `weight` and `bias`
  when converted with train="all".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import torch
from torch import Tensor, nn

from ho_co.layers import HOLinear, QuanTALinear
from ho_co.layers.quanta import quanta_dims
from ho_co.replace import Pattern, ReplaceReport, linear_features, replace_linear

WEIGHTS_NAME = "adapter_model.safetensors"  # PEFT's file names
CONFIG_NAME = "adapter_config.json"
FORMAT = "ho-co-adapter/1"
TRAIN_MODES = ("all", "high_order")


# --- the adapter kinds: each config knows its layers ---------------------------------------


@dataclass(kw_only=True)
class AdapterConfig:
    """What every adapter kind shares: which layers, and how one kind's layers behave.

    target_modules: the linear layers to adapt, PEFT-style name patterns (dotted suffix, glob
        or compiled regex; see `ho_co.replace`); None: every linear layer.
    exclude_modules: name patterns to leave alone.

    A subclass names its `method` (the key in adapter_config.json), `saved_fields` (what the
    file records per layer) and `key_fields` (of those, what a file must hold and an already
    adapted layer must match to be reused), and implements the hooks below.
    """

    target_modules: Pattern | Sequence[Pattern] | None = None
    exclude_modules: Pattern | Sequence[Pattern] | None = None

    method: ClassVar[str]
    saved_fields: ClassVar[tuple[str, ...]]
    key_fields: ClassVar[tuple[str, ...]]

    @staticmethod
    def owns(layer: nn.Module) -> bool:
        """Is `layer` an adapter layer of this kind?"""
        raise NotImplementedError

    @classmethod
    def of_layer(cls, layer: nn.Module) -> "AdapterConfig":
        """The configuration that rebuilds `layer` on a fresh base layer."""
        raise NotImplementedError

    def check(self, in_features: int, out_features: int) -> None:
        """Raise ValueError, with the numbers, when a layer of that size cannot be adapted."""
        raise NotImplementedError

    def make(self, linear: nn.Linear) -> nn.Module:
        """The adapter layer for `linear`."""
        raise NotImplementedError

    @staticmethod
    def trainable(layer: nn.Module) -> dict[str, nn.Parameter]:
        """The layer's tensors that train (everything else in the model is frozen)."""
        raise NotImplementedError

    @classmethod
    def saved(cls, layer: nn.Module) -> dict[str, Tensor]:
        """The layer's tensors in the weights file, keyed below the layer's name."""
        return dict(cls.trainable(layer))

    @staticmethod
    def merge(layer: nn.Module) -> nn.Module:
        """The plain layer with the adapter folded in, or `layer` itself where the math forbids it."""
        raise NotImplementedError

    def describe(self) -> str:
        return ", ".join(f"{key} {getattr(self, key)}" for key in self.key_fields)

    def reuse_problem(self, layer: nn.Module) -> str | None:
        """Why an adapted `layer` cannot take this configuration's saved tensors (None: it can)."""
        have = self.of_layer(layer)
        if any(getattr(have, key) != getattr(self, key) for key in self.key_fields):
            return f"is a {type(layer).__name__} with {have.describe()}, not {self.describe()}"
        return None

    def layer_spec(self) -> dict[str, Any]:
        return {"method": self.method, **{key: getattr(self, key) for key in self.saved_fields}}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "AdapterConfig":
        """The configuration of one saved layer; ValueError lists the keys it lacks."""
        missing = [key for key in cls.key_fields if key not in spec]
        if missing:
            raise ValueError(f"lacks {missing}")
        return cls(**{key: spec[key] for key in cls.saved_fields if key in spec})


@dataclass(kw_only=True)
class QuanTAConfig(AdapterConfig):
    """QuanTA adapters (`QuanTALinear`) on the chosen linear layers, PEFT's LoraConfig in kind.

    target_modules / exclude_modules: see AdapterConfig.
    dims: input factorization of every chosen layer (it multiplies to in_features); None: each
        layer's own, the official 4-axis split (`official_dims`, 4096 -> (16, 8, 8, 4)) or
        `n_axes` balanced axes (`factorize`).
    out_dims: output factorization, as many axes as dims; None: dims for a square layer, else
        out_features split the way dims was.
    n_axes: the number of balanced axes when dims is None; None: the official 4-axis split.
    dropout: dropout on the adapter's input, as LoRA's lora_dropout; 0: none.
    Every chosen layer is checked (`quanta_dims`) before any is changed.
    """

    dims: Sequence[int] | None = None
    out_dims: Sequence[int] | None = None
    n_axes: int | None = None
    dropout: float = 0.0

    method: ClassVar[str] = "quanta"
    saved_fields: ClassVar[tuple[str, ...]] = ("dims", "out_dims", "dropout")
    key_fields: ClassVar[tuple[str, ...]] = ("dims", "out_dims")

    @staticmethod
    def owns(layer: nn.Module) -> bool:
        return isinstance(layer, QuanTALinear)

    @classmethod
    def of_layer(cls, layer: QuanTALinear) -> "QuanTAConfig":
        dropout = layer.dropout.p if isinstance(layer.dropout, nn.Dropout) else 0.0
        return cls(dims=list(layer.dims), out_dims=list(layer.out_dims), dropout=dropout)

    def check(self, in_features: int, out_features: int) -> None:
        quanta_dims(in_features, out_features, self.dims, self.out_dims, self.n_axes)

    def make(self, linear: nn.Linear) -> QuanTALinear:
        return QuanTALinear(linear, self.dims, self.out_dims, self.n_axes, self.dropout)

    @staticmethod
    def trainable(layer: QuanTALinear) -> dict[str, nn.Parameter]:
        return {f"quanta_T.{i}": t for i, t in enumerate(layer.quanta_T)}

    @classmethod
    def saved(cls, layer: QuanTALinear) -> dict[str, Tensor]:
        # S too: the layer computes base + T - S, so S is part of the adapter
        return {**cls.trainable(layer), **{f"quanta_S.{i}": s for i, s in enumerate(layer.frozen_gates())}}

    @staticmethod
    def merge(layer: QuanTALinear) -> nn.Linear:
        return layer.merge()  # W0 + (T - S)

    def reuse_problem(self, layer: QuanTALinear) -> str | None:
        if layer.merged:
            return "is merged: unmerge() it before loading new gates"
        return super().reuse_problem(layer)


@dataclass(kw_only=True)
class HOLinearConfig(AdapterConfig):
    """Compatible conversion of the chosen linear layers with `HOLinear.from_linear`.

    target_modules / exclude_modules: see AdapterConfig.
    order: the K of HOLinear (no default: it is the experiment).
    train: what trains. "all": the converted layers' weight, bias and ho_scale (the rest of the
        model frozen); "high_order": only ho_scale, the strength of the orders >= 2, one number
        per output.
    The converted model computes exactly what it did (ho_scale starts at 0).
    """

    order: int
    train: str = "all"

    method: ClassVar[str] = "holinear"
    saved_fields: ClassVar[tuple[str, ...]] = ("order", "train")
    key_fields: ClassVar[tuple[str, ...]] = ("order", "train")

    def __post_init__(self) -> None:
        if self.train not in TRAIN_MODES:
            raise ValueError(f"HOLinear train must be one of {TRAIN_MODES}, got {self.train!r}")

    @staticmethod
    def owns(layer: nn.Module) -> bool:
        return isinstance(layer, HOLinear) and layer.ho_scale is not None  # made by from_linear

    @classmethod
    def of_layer(cls, layer: HOLinear) -> "HOLinearConfig":
        # A from_linear HOLinear not made by apply_holinear: save all of it, lose nothing.
        return cls(order=layer.order, train=getattr(layer, "adapter_train", "all"))

    def check(self, in_features: int, out_features: int) -> None:
        HOLinear(in_features, out_features, order=self.order, device="meta")  # its own checks, weightless

    def make(self, linear: nn.Linear) -> HOLinear:
        layer = HOLinear.from_linear(linear, self.order)
        layer.adapter_train = self.train
        return layer

    @classmethod
    def trainable(cls, layer: HOLinear) -> dict[str, nn.Parameter]:
        tensors = {"ho_scale": layer.ho_scale}
        if cls.of_layer(layer).train == "all":
            tensors["weight"] = layer.weight
            if layer.bias is not None:
                tensors["bias"] = layer.bias
        return tensors

    @staticmethod
    def merge(layer: HOLinear) -> nn.Module:
        # A zero ho_scale is a Linear in disguise; any other has orders >= 2 no matrix holds.
        return layer if layer.ho_scale.detach().any() else layer.to_linear()


ADAPTERS: dict[str, type[AdapterConfig]] = {kind.method: kind for kind in (QuanTAConfig, HOLinearConfig)}


def adapter_kind(layer: nn.Module) -> type[AdapterConfig] | None:
    """The adapter kind of `layer`, or None for a layer that is no adapter."""
    return next((kind for kind in ADAPTERS.values() if kind.owns(layer)), None)


# --- which layers are adapters, and what they train -------------------------------------


def _adapters(model: nn.Module) -> Iterator[tuple[str, nn.Module, type[AdapterConfig]]]:
    for name, module in model.named_modules():
        kind = adapter_kind(module)
        if kind is not None:
            yield name, module, kind


def adapter_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, layer) for every QuanTALinear and every converted (from_linear) HOLinear."""
    for name, layer, _ in _adapters(model):
        yield name, layer


def _mark_only_adapters_trainable(model: nn.Module) -> None:
    """PEFT's rule: everything frozen but the adapters' own trainable tensors."""
    model.requires_grad_(False)
    for _, layer, kind in _adapters(model):
        for tensor in kind.trainable(layer).values():
            tensor.requires_grad_(True)


def _not_inside_adapter(model: nn.Module):
    """replace_linear predicate: leave the layers an adapter wraps (QuanTA's base_layer) alone."""

    def keep(name: str, module: nn.Module) -> bool:
        parent = name.rpartition(".")[0]
        return adapter_kind(model.get_submodule(parent) if parent else model) is None

    return keep


# --- apply --------------------------------------------------------------------------------


def apply_adapter(model: nn.Module, config: AdapterConfig, names: Sequence[str] | None = None) -> ReplaceReport:
    """Adapt the layers `config` chooses (PEFT's get_peft_model, in place) and freeze everything
    but the adapters' trainable tensors; returns replace_linear's report.

    names: exact module names to adapt besides (usually: instead of) `config.target_modules`.
    Every chosen layer is checked before any is changed: a layer that does not fit raises
    ValueError naming the module, and the model is left as it was.
    """
    report = replace_linear(
        model, config.make, config.target_modules, config.exclude_modules,
        predicate=_not_inside_adapter(model), names=names, check=config.check,
    )
    if not report.replaced:
        chosen = config.target_modules if names is None else names
        raise ValueError(
            f"target_modules {chosen!r} select no linear layer left to adapt in {type(model).__name__} "
            "(are they excluded, or already adapted?)"
        )
    if report.skipped:  # cannot happen after the checks; never leave it silent
        raise RuntimeError(f"some layers were not adapted:\n{report}")
    _mark_only_adapters_trainable(model)
    return report


def apply_quanta(
    model: nn.Module,
    target_modules: Pattern | Sequence[Pattern],
    dims: Sequence[int] | None = None,
    exclude_modules: Pattern | Sequence[Pattern] | None = None,
    **options,
) -> ReplaceReport:
    """Wrap the chosen linear layers in QuanTALinear and freeze everything but the gates T.

    `apply_adapter(model, QuanTAConfig(...))`; options: QuanTAConfig's `out_dims`, `n_axes`,
    `dropout`.
    """
    known = [f.name for f in fields(QuanTAConfig)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"apply_quanta got unknown options {unknown}; known: {known}")
    config = QuanTAConfig(target_modules=target_modules, exclude_modules=exclude_modules, dims=dims, **options)
    return apply_adapter(model, config)


def apply_holinear(
    model: nn.Module,
    target_modules: Pattern | Sequence[Pattern],
    order: int,
    train: str = "all",
    exclude_modules: Pattern | Sequence[Pattern] | None = None,
) -> ReplaceReport:
    """Convert the chosen linear layers with `HOLinear.from_linear(layer, order)`:
    `apply_adapter(model, HOLinearConfig(...))` (see HOLinearConfig for `train`)."""
    config = HOLinearConfig(target_modules=target_modules, exclude_modules=exclude_modules, order=order, train=train)
    return apply_adapter(model, config)


# --- report -------------------------------------------------------------------------------


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared parameters count once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def print_trainable_parameters(model: nn.Module) -> None:
    """PEFT's line: `trainable params: X || all params: Y || trainable%: Z`."""
    trainable, total = trainable_parameters(model)
    percent = 100 * trainable / total if total else 0.0
    print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {percent:.4f}")


# --- save / load --------------------------------------------------------------------------


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapter tensors only, keyed by full name (e.g. `layers.0.q_proj.quanta_T.0`)."""
    return {
        f"{name}.{key}" if name else key: tensor.detach()
        for name, layer, kind in _adapters(model)
        for key, tensor in kind.saved(layer).items()
    }


def adapter_config(model: nn.Module) -> dict[str, Any]:
    """The JSON written next to the weights: every adapted module and how to rebuild it."""
    modules = {name: kind.of_layer(layer).layer_spec() for name, layer, kind in _adapters(model)}
    return {"format": FORMAT, "target_modules": modules}


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Write `adapter_model.safetensors` and `adapter_config.json` into the folder `path`."""
    from safetensors.torch import save_file

    config = adapter_config(model)
    if not config["target_modules"]:
        raise ValueError(f"{type(model).__name__} has no adapter layer (QuanTALinear or converted HOLinear) to save")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {key: t.cpu().contiguous() for key, t in adapter_state_dict(model).items()}
    save_file(tensors, folder / WEIGHTS_NAME, metadata={"format": "pt"})
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def _read_config(folder: Path) -> dict[str, AdapterConfig]:
    file = folder / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {folder}")
    config = json.loads(file.read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{file}: format is {config.get('format')!r}, expected {FORMAT!r}")
    modules = config.get("target_modules")
    if not isinstance(modules, dict) or not modules:
        raise ValueError(f"{file}: 'target_modules' must be a non-empty mapping of module name to spec")
    configs = {}
    for name, spec in modules.items():
        kind = ADAPTERS.get(spec.get("method"))
        if kind is None:
            raise ValueError(f"{file}: module {name!r} has unknown method {spec.get('method')!r}")
        try:
            configs[name] = kind.from_spec(spec)
        except ValueError as err:
            raise ValueError(f"{file}: module {name!r} {err}") from None
    return configs


def _still_to_adapt(model: nn.Module, name: str, config: AdapterConfig, file: Path) -> bool:
    """Is `name` a layer the config fits? True: still to adapt; False: already adapted (reuse)."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"{file} names module {name!r}, which {type(model).__name__} does not have") from None
    where = f"{file}: module {name!r}"
    if adapter_kind(module) is type(config):
        problem = config.reuse_problem(module)
        if problem:
            raise ValueError(f"{where} {problem}")
        return False
    try:
        n_in, n_out = linear_features(module)
    except TypeError:
        raise ValueError(f"{where} is a {type(module).__name__}, expected nn.Linear or GPT-2 Conv1D") from None
    try:
        config.check(n_in, n_out)
    except ValueError as err:
        raise ValueError(f"{where} ({n_in}->{n_out}): {err}") from None
    return True


def load_adapter(model: nn.Module, path: str | Path) -> nn.Module:
    """Re-apply a saved adapter to `model` (a fresh base model) and load its weights, strictly.

    Modules already adapted with the same spec are reused. The config is checked against the
    model before anything changes (module names, types, sizes). Then every key of the weights
    file must fit a tensor of the adapted modules (same shape) and every such tensor must be in
    the file, otherwise ValueError naming the keys (the model is then adapted but not loaded).
    Returns `model` (changed in place).
    """
    from safetensors.torch import load_file

    folder = Path(path)
    modules = _read_config(folder)
    config_file = folder / CONFIG_NAME
    to_apply = {name: config for name, config in modules.items() if _still_to_adapt(model, name, config, config_file)}
    weights_file = folder / WEIGHTS_NAME
    if not weights_file.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {folder}")
    saved = load_file(weights_file)

    for name, config in to_apply.items():
        apply_adapter(model, config, names=[name])
    _mark_only_adapters_trainable(model)

    expected = {}
    for name, config in modules.items():
        for key, tensor in type(config).saved(model.get_submodule(name)).items():
            expected[f"{name}.{key}" if name else key] = tensor
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{weights_file} does not fit {config_file}: missing keys {missing}, unexpected keys {unexpected}"
        )
    for key, tensor in expected.items():
        if saved[key].shape != tensor.shape:
            raise ValueError(
                f"{weights_file}: {key} has shape {tuple(saved[key].shape)}, the model expects {tuple(tensor.shape)}"
            )
    with torch.no_grad():
        for key, tensor in expected.items():
            tensor.copy_(saved[key])
    return model


# --- merge --------------------------------------------------------------------------------


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Fold every adapter into plain layers where the math allows, in place; returns `model`.

    QuanTALinear -> its base nn.Linear with W0 + (T - S) merged in. A converted HOLinear whose
    ho_scale is all zero is a Linear in disguise -> nn.Linear (`HOLinear.to_linear`); with any
    nonzero ho_scale it stays a HOLinear (its higher orders are not linear, so no single matrix
    holds them).
    """
    for name, layer, kind in list(_adapters(model)):
        merged = kind.merge(layer)
        if merged is not layer:
            model.set_submodule(name, merged)
    return model
