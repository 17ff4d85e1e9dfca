"""replace_linear: swap chosen linear layers of any model for `make(linear)`.

Knows nothing of HOLinear or adapters: it takes a factory. Candidates are `nn.Linear` and
the transposed-weight `Conv1D` of GPT-2 in transformers (duck-typed, so transformers is never
imported to find or convert one); a Conv1D is first turned into the equivalent `nn.Linear`, so
one factory serves both, and `as_conv1d` turns such a Linear back into a Conv1D.

Name patterns match the full dotted module name, three ways:
- a string with glob characters (`*?[`) is a shell-style glob on the whole name
  (`encoder.*`, `*q_proj`, `*.mlp.c_proj`);
- a plain string matches as a dotted suffix, like PEFT's `target_modules` (`q_proj` matches
  `model.layers.0.self_attn.q_proj`);
- a compiled `re.Pattern` must match the whole name (`re.fullmatch`).
Exact module names, resolved once, are selected with `names=` instead.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence, Union

import torch
from torch import Tensor, nn

Pattern = Union[str, "re.Pattern[str]"]
Factory = Callable[[nn.Linear], nn.Module]


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2's Conv1D: a Linear whose weight is stored transposed as [in, out] (`nf` = out)."""
    return (
        type(module).__name__ == "Conv1D"
        and hasattr(module, "nf")
        and isinstance(getattr(module, "weight", None), torch.Tensor)
        and module.weight.dim() == 2
    )


def linear_features(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of an nn.Linear or a GPT-2 Conv1D; TypeError for anything else."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if is_conv1d(module):
        in_features, out_features = module.weight.shape
        return in_features, out_features
    raise TypeError(f"{type(module).__name__} is neither nn.Linear nor a GPT-2 Conv1D")


def linear_from(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    """An nn.Linear holding copies of `weight` [out, in] and `bias`, on their device and dtype,
    trainable where `weight` is."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                       dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear.requires_grad_(weight.requires_grad)


def as_linear(module: nn.Module) -> nn.Linear:
    """The module as an `nn.Linear` (the module itself, or a Conv1D's equivalent copy)."""
    linear_features(module)  # TypeError for anything but the two
    if isinstance(module, nn.Linear):
        return module
    return linear_from(module.weight.t(), module.bias)


def as_conv1d(linear: nn.Module) -> nn.Module:
    """The inverse of `as_linear` for a layer that was a GPT-2 Conv1D: the same function in
    Conv1D's [in, out] layout (a missing bias becomes zeros, as Conv1D always has one).

    Needs transformers (its Conv1D class); a plain Hugging Face checkpoint of GPT-2 must hold
    Conv1D layers, or `from_pretrained` would transpose them (silently, for square layers).
    """
    from transformers.pytorch_utils import Conv1D

    if not isinstance(linear, nn.Linear):
        raise TypeError(f"as_conv1d expects an nn.Linear, got {type(linear).__name__}")
    conv = Conv1D(linear.out_features, linear.in_features).to(linear.weight.device, linear.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.t())
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
        else:
            conv.bias.zero_()
    return conv


def name_matches(name: str, pattern: Pattern) -> bool:
    """Does the dotted module `name` match `pattern` (glob, dotted suffix, or regex)?"""
    if isinstance(pattern, re.Pattern):
        return pattern.fullmatch(name) is not None
    if not isinstance(pattern, str):
        raise TypeError(f"a module pattern must be a str or re.Pattern, got {type(pattern).__name__}")
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern or name.endswith("." + pattern)


@dataclass
class Replacement:
    """One candidate module: what it was, what it became, or why it was left as it was."""

    name: str
    old_type: str
    in_features: int
    out_features: int
    new_type: str | None = None
    skipped: str | None = None


@dataclass
class ReplaceReport:
    """What replace_linear did (or, in a dry run, would do)."""

    entries: list[Replacement] = field(default_factory=list)
    dry_run: bool = False

    @property
    def replaced(self) -> list[Replacement]:
        return [e for e in self.entries if e.skipped is None]

    @property
    def skipped(self) -> list[Replacement]:
        return [e for e in self.entries if e.skipped is not None]

    def __len__(self) -> int:
        return len(self.replaced)

    def __str__(self) -> str:
        verb = "would replace" if self.dry_run else "replaced"
        lines = [f"{verb} {len(self.replaced)} module(s), skipped {len(self.skipped)}"]
        for e in self.entries:
            shape = f"{e.in_features}->{e.out_features}"
            if e.skipped is None:
                lines.append(f"  {e.name}: {e.old_type} -> {e.new_type or '?'} [{shape}]")
            else:
                lines.append(f"  {e.name}: {e.old_type} [{shape}] skipped: {e.skipped}")
        return "\n".join(lines)


def _as_list(patterns: Pattern | Iterable[Pattern] | None) -> list[Pattern]:
    if patterns is None:
        return []
    if isinstance(patterns, (str, re.Pattern)):
        return [patterns]
    return list(patterns)


def _no_such_layer(model: nn.Module, what: str, candidates: Sequence[str]) -> ValueError:
    shown = ", ".join(candidates[:50]) or "(none)"
    more = f" ... and {len(candidates) - 50} more" if len(candidates) > 50 else ""
    return ValueError(f"{what} no linear layer of {type(model).__name__}; linear layers: {shown}{more}")


def replace_linear(
    model: nn.Module,
    make: Factory,
    targets: Pattern | Sequence[Pattern] | None = None,
    exclude: Pattern | Sequence[Pattern] | None = None,
    types: tuple[type, ...] | None = None,
    predicate: Callable[[str, nn.Module], bool] | None = None,
    dry_run: bool = False,
    names: Iterable[str] | None = None,
    check: Callable[[int, int], None] | None = None,
) -> ReplaceReport:
    """Replace, in place, the chosen linear layers of `model` by `make(linear)`.

    targets:   name patterns (None, with names None too: every candidate). Each pattern must
               match at least one candidate, otherwise ValueError listing the candidate names.
    names:     exact module names, chosen besides what `targets` match (no pattern rules:
               `layers.0.q_proj` is that module only; `[]` chooses nothing). Each must be a
               candidate, otherwise ValueError listing the candidate names.
    exclude:   name patterns to leave alone.
    types:     restrict candidates to these module types (e.g. `(nn.Linear,)`).
    predicate: `predicate(name, module) -> bool`, a last say on each candidate.
    check:     `check(in_features, out_features)`, run on every chosen layer before any is
               replaced; a ValueError it raises is raised again naming the module, and the
               model is left as it was.
    dry_run:   report what would change, change nothing (`make` is not called).

    A `make` that raises ValueError (e.g. in_features < order) skips that module and the
    reason is recorded in the report; nothing is skipped silently.
    """
    target_list, exclude_list = _as_list(targets), _as_list(exclude)
    exact = None if names is None else set(names)
    candidates = {
        name: module
        for name, module in model.named_modules()
        if name and (isinstance(module, nn.Linear) or is_conv1d(module))
    }
    for pattern in target_list:
        if not any(name_matches(name, pattern) for name in candidates):
            raise _no_such_layer(model, f"target pattern {pattern!r} matches", list(candidates))
    unknown = sorted((exact or set()) - set(candidates))
    if unknown:
        raise _no_such_layer(model, f"module {unknown[0]!r} is", list(candidates))

    selective = bool(target_list) or exact is not None
    report = ReplaceReport(dry_run=dry_run)
    chosen = []
    for name, module in candidates.items():
        if selective and name not in (exact or ()) and not any(name_matches(name, p) for p in target_list):
            continue
        if any(name_matches(name, p) for p in exclude_list):
            continue
        if types is not None and not isinstance(module, types):
            continue
        if predicate is not None and not predicate(name, module):
            continue
        entry = Replacement(name, type(module).__name__, *linear_features(module))
        report.entries.append(entry)
        chosen.append((entry, module))
    for entry in report.entries if check is not None else []:  # all before any change
        try:
            check(entry.in_features, entry.out_features)
        except ValueError as err:
            raise ValueError(f"module {entry.name!r} ({entry.in_features}->{entry.out_features}): {err}") from None
    if dry_run:
        return report
    for entry, module in chosen:
        try:
            new = make(as_linear(module))
        except ValueError as err:
            entry.skipped = str(err)
            continue
        entry.new_type = type(new).__name__
        model.set_submodule(entry.name, new)
    return report
