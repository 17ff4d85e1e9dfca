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
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from ho_co.layers import HOLinear, QuanTALinear
from ho_co.layers.quanta import quanta_dims
from ho_co.replace import Pattern, ReplaceReport, is_conv1d, replace_linear

WEIGHTS_NAME = "adapter_model.safetensors"  # PEFT's file names
CONFIG_NAME = "adapter_config.json"
FORMAT = "ho-co-adapter/1"
TRAIN_MODES = ("all", "high_order")
QUANTA_OPTIONS = ("out_dims", "n_axes", "dropout")


# --- which layers are adapters, and what they train -------------------------------------


def adapter_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, layer) for every QuanTALinear and every converted (from_linear) HOLinear."""
    for name, module in model.named_modules():
        if isinstance(module, QuanTALinear) or (isinstance(module, HOLinear) and module.ho_scale is not None):
            yield name, module


def _holinear_train(layer: HOLinear) -> str:
    # A from_linear HOLinear not made by apply_holinear: save all of it, lose nothing.
    return getattr(layer, "adapter_train", "all")


def _trainable_tensors(layer: nn.Module) -> dict[str, nn.Parameter]:
    if isinstance(layer, QuanTALinear):
        return {f"quanta_T.{i}": t for i, t in enumerate(layer.quanta_T)}
    tensors = {"ho_scale": layer.ho_scale}
    if _holinear_train(layer) == "all":
        tensors["weight"] = layer.weight
        if layer.bias is not None:
            tensors["bias"] = layer.bias
    return tensors


def _layer_state(layer: nn.Module) -> dict[str, Tensor]:
    state = dict(_trainable_tensors(layer))
    if isinstance(layer, QuanTALinear):
        state.update({f"quanta_S.{i}": s for i, s in enumerate(layer.frozen_gates())})
    return state


def _spec(layer: nn.Module) -> dict[str, Any]:
    """What `load_adapter` needs to rebuild this layer on a fresh base layer."""
    if isinstance(layer, QuanTALinear):
        dropout = layer.dropout.p if isinstance(layer.dropout, nn.Dropout) else 0.0
        return {"method": "quanta", "dims": list(layer.dims), "out_dims": list(layer.out_dims), "dropout": dropout}
    return {"method": "holinear", "order": layer.order, "train": _holinear_train(layer)}


def _mark_only_adapters_trainable(model: nn.Module) -> None:
    """PEFT's rule: everything frozen but the adapters' own trainable tensors."""
    model.requires_grad_(False)
    for _, layer in adapter_layers(model):
        for tensor in _trainable_tensors(layer).values():
            tensor.requires_grad_(True)


def _not_inside_adapter(model: nn.Module):
    """replace_linear predicate: leave the base layer wrapped by a QuanTALinear alone."""

    def keep(name: str, module: nn.Module) -> bool:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        return not (child == "base_layer" and isinstance(owner, QuanTALinear))

    return keep


def _replace_checked(model, make, targets, exclude, check) -> ReplaceReport:
    """replace_linear, but all-or-nothing: `check(in, out)` runs on every chosen layer first."""
    chosen = replace_linear(model, make, targets, exclude, predicate=_not_inside_adapter(model), dry_run=True)
    if not chosen.replaced:
        raise ValueError(
            f"target_modules {targets!r} select no linear layer left to adapt in {type(model).__name__} "
            "(are they excluded, or already adapted?)"
        )
    for entry in chosen.replaced:
        try:
            check(entry.in_features, entry.out_features)
        except ValueError as err:
            raise ValueError(f"module {entry.name!r} ({entry.in_features}->{entry.out_features}): {err}") from None
    report = replace_linear(model, make, targets, exclude, predicate=_not_inside_adapter(model))
    if report.skipped:  # cannot happen after the checks above; never leave it silent
        raise RuntimeError(f"some layers were not adapted:\n{report}")
    return report


# --- apply --------------------------------------------------------------------------------


def apply_quanta(
    model: nn.Module,
    target_modules: Pattern | Sequence[Pattern],
    dims: Sequence[int] | None = None,
    exclude_modules: Pattern | Sequence[Pattern] | None = None,
    **quanta_kwargs,
) -> ReplaceReport:
    """Wrap the chosen linear layers in QuanTALinear and freeze everything but the gates T.

    dims: input factorization for every chosen layer; None factorizes each layer's own size
    (the official 4-axis split, or `n_axes` balanced axes). quanta_kwargs: `out_dims`, `n_axes`, `dropout` of QuanTALinear.
    Every chosen layer is checked before any is changed: a bad dims raises ValueError naming
    the module, and the model is left as it was.
    """
    unknown = sorted(set(quanta_kwargs) - set(QUANTA_OPTIONS))
    if unknown:
        raise TypeError(f"apply_quanta got unknown options {unknown}; known: {list(QUANTA_OPTIONS)}")
    out_dims, n_axes = quanta_kwargs.get("out_dims"), quanta_kwargs.get("n_axes")

    report = _replace_checked(
        model,
        lambda linear: QuanTALinear(linear, dims=dims, **quanta_kwargs),
        target_modules,
        exclude_modules,
        lambda n_in, n_out: quanta_dims(n_in, n_out, dims, out_dims, n_axes),
    )
    _mark_only_adapters_trainable(model)
    return report


def apply_holinear(
    model: nn.Module,
    target_modules: Pattern | Sequence[Pattern],
    order: int,
    train: str = "all",
    exclude_modules: Pattern | Sequence[Pattern] | None = None,
) -> ReplaceReport:
    """Convert the chosen linear layers with `HOLinear.from_linear(layer, order)`.

    The converted model computes exactly what it did (ho_scale starts at 0). What trains:
    - "all": the converted layers' weight, bias and ho_scale (the rest of the model frozen);
    - "high_order": only ho_scale, the strength of the orders >= 2, one number per output.
    """
    if train not in TRAIN_MODES:
        raise ValueError(f"apply_holinear train must be one of {TRAIN_MODES}, got {train!r}")

    def check(n_in: int, n_out: int) -> None:  # HOLinear's own checks, on a weightless layer
        HOLinear(n_in, n_out, order=order, device="meta")

    def make(linear: nn.Linear) -> HOLinear:
        layer = HOLinear.from_linear(linear, order)
        layer.adapter_train = train
        return layer

    report = _replace_checked(model, make, target_modules, exclude_modules, check)
    _mark_only_adapters_trainable(model)
    return report


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
        for name, layer in adapter_layers(model)
        for key, tensor in _layer_state(layer).items()
    }


def adapter_config(model: nn.Module) -> dict[str, Any]:
    """The JSON written next to the weights: every adapted module and how to rebuild it."""
    return {"format": FORMAT, "target_modules": {name: _spec(layer) for name, layer in adapter_layers(model)}}


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


def _read_config(folder: Path) -> dict[str, dict[str, Any]]:
    file = folder / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {folder}")
    config = json.loads(file.read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{file}: format is {config.get('format')!r}, expected {FORMAT!r}")
    modules = config.get("target_modules")
    if not isinstance(modules, dict) or not modules:
        raise ValueError(f"{file}: 'target_modules' must be a non-empty mapping of module name to spec")
    for name, spec in modules.items():
        method = spec.get("method")
        required = {"quanta": ("dims", "out_dims"), "holinear": ("order", "train")}.get(method)
        if required is None:
            raise ValueError(f"{file}: module {name!r} has unknown method {method!r}")
        missing = [key for key in required if key not in spec]
        if missing:
            raise ValueError(f"{file}: module {name!r} lacks {missing}")
    return modules


def _check_target(model: nn.Module, name: str, spec: dict[str, Any], file: Path) -> bool:
    """Is `name` a layer the spec fits? True: still to adapt; False: already adapted (reuse)."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"{file} names module {name!r}, which {type(model).__name__} does not have") from None
    where = f"{file}: module {name!r}"
    if spec["method"] == "quanta":
        if isinstance(module, QuanTALinear):
            if (list(module.dims), list(module.out_dims)) != (spec["dims"], spec["out_dims"]):
                raise ValueError(
                    f"{where} is a QuanTALinear with dims {module.dims}->{module.out_dims}, "
                    f"not {spec['dims']}->{spec['out_dims']}"
                )
            if module.merged:
                raise ValueError(f"{where} is merged: unmerge() it before loading new gates")
            return False
    elif isinstance(module, HOLinear) and module.ho_scale is not None:
        if module.order != spec["order"] or _holinear_train(module) != spec["train"]:
            raise ValueError(
                f"{where} is a HOLinear of order {module.order} ({_holinear_train(module)}), "
                f"not {spec['order']} ({spec['train']})"
            )
        return False
    if not (isinstance(module, nn.Linear) or is_conv1d(module)):
        raise ValueError(f"{where} is a {type(module).__name__}, expected nn.Linear or GPT-2 Conv1D")
    if isinstance(module, nn.Linear):
        n_in, n_out = module.in_features, module.out_features
    else:  # Conv1D stores its weight as [in, out]
        n_in, n_out = module.weight.shape
    try:
        if spec["method"] == "quanta":
            quanta_dims(n_in, n_out, spec["dims"], spec["out_dims"])
        else:
            HOLinear(n_in, n_out, order=spec["order"], device="meta")
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
    to_apply = {name: spec for name, spec in modules.items() if _check_target(model, name, spec, config_file)}
    weights_file = folder / WEIGHTS_NAME
    if not weights_file.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {folder}")
    saved = load_file(weights_file)

    for name, spec in to_apply.items():
        target = re.compile(re.escape(name))
        if spec["method"] == "quanta":
            dropout = spec.get("dropout", 0.0)
            apply_quanta(model, target, dims=spec["dims"], out_dims=spec["out_dims"], dropout=dropout)
        else:
            apply_holinear(model, target, order=spec["order"], train=spec["train"])
    _mark_only_adapters_trainable(model)

    expected = {}
    for name in modules:
        for key, tensor in _layer_state(model.get_submodule(name)).items():
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
    ho_scale is all zero is a Linear in disguise -> nn.Linear; with any nonzero ho_scale it
    stays a HOLinear (its higher orders are not linear, so no single matrix holds them).
    """
    for name, layer in list(adapter_layers(model)):
        if isinstance(layer, QuanTALinear):
            model.set_submodule(name, layer.merge())
        elif not layer.ho_scale.detach().any():
            linear = nn.Linear(
                layer.in_features, layer.out_features, bias=layer.bias is not None,
                device=layer.weight.device, dtype=layer.weight.dtype,
            )
            with torch.no_grad():
                linear.weight.copy_(layer.weight)
                if layer.bias is not None:
                    linear.bias.copy_(layer.bias)
            linear.requires_grad_(layer.weight.requires_grad)
            model.set_submodule(name, linear)
    return model
