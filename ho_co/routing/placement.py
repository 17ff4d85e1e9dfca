"""Where HO layers go in an rl4co policy: `apply_ho` and its placement presets.

A preset names a kind of building block of rl4co's shared `rl4co.models.nn` (plus the two slots
every constructive policy has, `encoder` and `decoder`), and selects the `nn.Linear` layers
inside those blocks, so `attention` or `ffn` mean the same thing in AM, POMO, SymNCO, PolyNet,
MatNet, MDAM or a model of your own built from the same blocks. Presets are resolved to module
names, then `replace_linear` does the swap and reports it.

MatNet's mixed-score MLP is not an `nn.Linear` (raw per-head parameters inside
`MixedScoresSDPA`), so `replace_linear` cannot see it; the `mixer` preset swaps that module for
`HOMixedScoresSDPA`, which applies the same high-order operator to the MLP's first layer (two
inputs per head: attention score and cost; order 2).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch
from rl4co.models.nn.attention import MultiHeadAttention, MultiHeadCrossAttention, PointerAttention
from rl4co.models.nn.mlp import MLP
from rl4co.models.nn.moe import MoE
from rl4co.models.nn.ops import SkipConnection, TransformerFFN
from rl4co.models.zoo.matnet.encoder import MixedScoresSDPA
from torch import nn
from torch.nn import functional as F

from ho_co.layers import HOLinear
from ho_co.replace import Replacement, ReplaceReport, name_matches, replace_linear

# Every linear layer (and MatNet's mixer), at order 2: the lowest greedy gap per training instance for
# POMO and MatNet in benchmarks/ho_study.py, order 4 no better (numbers in BENCHMARKS.md, "HO placement").
DEFAULT_TARGETS = ("all",)
MODES = ("scratch", "convert")
MIXER = "mixer"
ALL = "all"
CACHED = "cached"
NN = "rl4co.models.nn."


def defined_in(module: nn.Module, *modules: str) -> bool:
    """Is the module's class (or a base class) defined in one of these Python modules?"""
    return any(cls.__module__ in modules for cls in type(module).__mro__)


def is_attention(module: nn.Module) -> bool:
    return isinstance(module, (MultiHeadAttention, MultiHeadCrossAttention))


def is_ffn(module: nn.Module) -> bool:
    """rl4co's feed-forward blocks, and a residual (`SkipConnection`) around anything but attention
    (MDAM's last layer writes its feed-forward block as a bare Sequential inside one)."""
    if isinstance(module, (MLP, TransformerFFN, MoE)):
        return True
    return isinstance(module, SkipConnection) and not any(is_attention(m) for m in module.modules())


# preset -> (what it is, which modules are its blocks); the Linear layers inside the blocks are replaced
PRESETS: dict[str, tuple[str, Callable[[str, nn.Module], bool]]] = {
    "embedding": ("init and edge embeddings (rl4co.models.nn.env_embeddings.init/edge)",
                  lambda name, m: defined_in(m, NN + "env_embeddings.init", NN + "env_embeddings.edge")),
    "attention": ("multi-head (cross-)attention (rl4co.models.nn.attention.MultiHeadAttention, "
                  "MultiHeadCrossAttention)", lambda name, m: is_attention(m)),
    "ffn": ("feed-forward blocks (rl4co.models.nn MLP, TransformerFFN, MoE, a residual around a feed-forward)",
            lambda name, m: is_ffn(m)),
    "gnn": ("graph network layers (rl4co.models.nn.graph: GNNLayer, MessagePassingLayer, ...)",
            lambda name, m: defined_in(m, NN + "graph.gnn", NN + "graph.mpnn", NN + "graph.hgnn", NN + "graph.gcn")),
    "pointer": ("the decoder's pointer attention (rl4co.models.nn.attention.PointerAttention)",
                lambda name, m: isinstance(m, PointerAttention)),
    "context": ("the decoder's context embeddings (rl4co.models.nn.env_embeddings.context)",
                lambda name, m: defined_in(m, NN + "env_embeddings.context")),
    "encoder": ("everything in the policy's encoder", lambda name, m: name == "encoder"),
    "decoder": ("everything in the policy's decoder", lambda name, m: name == "decoder"),
}


def runs_every_step(module: nn.Module) -> bool:
    """Blocks a constructive decoder runs at every decoding step (pointer, context and dynamic
    embeddings); everything else runs once per instance: the encoder, and the projections rl4co's
    decoders compute once and cache."""
    return isinstance(module, PointerAttention) or defined_in(
        module, NN + "env_embeddings.context", NN + "env_embeddings.dynamic")


def linear_names(policy: nn.Module) -> list[str]:
    return [name for name, m in policy.named_modules() if name and isinstance(m, nn.Linear)]


def layers_in_blocks(policy: nn.Module, is_block: Callable[[str, nn.Module], bool]) -> list[str]:
    """The names of the Linear layers inside the modules `is_block(name, module)` selects."""
    blocks = [name for name, m in policy.named_modules() if name and is_block(name, m)]
    return [n for n in linear_names(policy) if any(n == b or n.startswith(b + ".") for b in blocks)]


def cached_layers(policy: nn.Module) -> list[str]:
    """Every Linear layer outside the decoding step (see `runs_every_step`)."""
    per_step = set(layers_in_blocks(policy, lambda name, m: runs_every_step(m)))
    return [n for n in linear_names(policy) if n not in per_step]


def mixer_names(policy: nn.Module) -> list[str]:
    """MatNet's plain mixed-score attention functions (not yet HO)."""
    return [name for name, m in policy.named_modules() if type(m) is MixedScoresSDPA]


def preset_layers(policy: nn.Module, preset: str) -> list[str]:
    """The names of the Linear layers inside the blocks `preset` selects."""
    return layers_in_blocks(policy, PRESETS[preset][1])


def describe(policy: nn.Module) -> str:
    """What each preset finds in `policy`: for error messages."""
    found = {p: len(preset_layers(policy, p)) for p in PRESETS}
    found[MIXER] = len(mixer_names(policy))
    here = ", ".join(f"{p} ({n})" for p, n in found.items() if n) or "(none)"
    missing = ", ".join(p for p, n in found.items() if not n)
    linears = linear_names(policy)
    shown = ", ".join(linears[:30]) + (f" ... and {len(linears) - 30} more" if len(linears) > 30 else "")
    return (f"presets that find layers here (count): {here}; finding nothing: {missing or '(none)'}; "
            f"linear layers: {shown or '(none)'}")


def resolve_targets(policy: nn.Module, targets: Iterable[str]) -> tuple[list[str], list[str], bool]:
    """(Linear layer names from presets, replace_linear patterns, whether the mixer was named)."""
    names: list[str] = []
    patterns: list[str] = []
    mixer = False
    for target in targets:
        if target == ALL:
            names += linear_names(policy)
        elif target == CACHED:
            names += cached_layers(policy)
        elif target == MIXER:
            if not mixer_names(policy):
                raise ValueError(f"HO preset '{MIXER}' (MatNet's mixed-score MLP) finds nothing in "
                                 f"{type(policy).__name__}; {describe(policy)}")
            mixer = True
        elif target in PRESETS:
            found = preset_layers(policy, target)
            if not found:
                raise ValueError(f"HO preset {target!r} ({PRESETS[target][0]}) finds no linear layer in "
                                 f"{type(policy).__name__}; {describe(policy)}")
            names += found
        else:
            patterns.append(target)  # a replace_linear pattern: it checks that it matches
    return list(dict.fromkeys(names)), patterns, mixer


def apply_ho(policy: nn.Module, targets: str | Iterable[str] | None = None, order: int = 2,
             mode: str = "scratch", exclude: Iterable[str] | None = None) -> ReplaceReport:
    """Put HOLinear layers into any rl4co policy, in place; returns replace_linear's report.

    targets: preset names (`embedding`, `attention`, `ffn`, `gnn`, `pointer`, `context`, `encoder`,
             `decoder`, `mixer`, `cached`: all but the per-step decoder layers, `all`) and/or
             replace_linear patterns; None: DEFAULT_TARGETS.
             A preset that finds nothing in this policy raises, listing what the presets find.
    mode:    "scratch": HOLinear(in, out, order), the paper's operator, fresh weights;
             "convert": HOLinear.from_linear, the same function as now (high orders grow from 0).
    exclude: replace_linear patterns to leave alone.
    An order below 1, or wider than a targeted layer, raises naming it, before anything changes.
    Only a layer whose order is fixed is skipped (and reported) by `all` and `cached`: a one-input
    layer (order 1 only) and MatNet's mixer (order 2 only); naming either one with another order
    raises, and so does an order that fits no targeted layer.
    """
    if mode not in MODES:
        raise ValueError(f"HO mode must be one of {MODES}, got {mode!r}")
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"HO order must be an integer >= 1, got order={order!r}")
    targets = list(DEFAULT_TARGETS if targets is None else [targets] if isinstance(targets, str) else targets)
    exclude = list(exclude or [])
    names, patterns, mixer = resolve_targets(policy, targets)
    if mixer and order != 2:
        raise ValueError(f"the MatNet mixer has 2 inputs per head, so its HO order is 2 (got order={order})")
    if mode == "scratch":
        make = lambda lin: HOLinear(lin.in_features, lin.out_features, order=order, bias=lin.bias is not None)
    else:
        make = lambda lin: HOLinear.from_linear(lin, order)
    chosen = [re.compile(re.escape(n)) for n in names] + patterns
    if chosen:
        planned = replace_linear(policy, make, targets=chosen, exclude=exclude, dry_run=True)
        check_widths(policy, targets, patterns, order, planned)
    report = replace_linear(policy, make, targets=chosen, exclude=exclude) if chosen else ReplaceReport()
    if mixer or ALL in targets or CACHED in targets:
        for name in mixer_names(policy):
            if any(name_matches(name, p) for p in exclude):
                continue
            plain = policy.get_submodule(name)
            entry = Replacement(name, type(plain).__name__, plain.num_scores + 1, plain.mix_b1.size(-1))
            report.entries.append(entry)
            if order != 2:
                entry.skipped = f"the mixer has 2 inputs per head, so its HO order is 2 (asked {order})"
                continue
            policy.set_submodule(name, HOMixedScoresSDPA.from_plain(plain, learnable_scale=mode == "convert"))
            entry.new_type = HOMixedScoresSDPA.__name__
    if report.entries and not report.replaced:  # nothing changed: an order that fits nothing
        widest = max(e.in_features for e in report.entries)
        raise ValueError(f"HO order {order} fits no targeted layer of {type(policy).__name__}: "
                         f"the widest has in_features={widest}")
    return report


def check_widths(policy: nn.Module, targets: list, patterns: list, order: int, planned: ReplaceReport) -> None:
    """Every layer a specific preset or pattern names must take `order`: a skipped one would leave
    a plain layer where HO was asked for. The exception is a layer only swept in by `all`/`cached`
    (a coordinate embedding with 2 inputs at order 4, say): it stays plain, and the report says
    so, rather than make the broad presets unusable at higher orders."""
    named = {n for t in targets if isinstance(t, str) and t in PRESETS for n in preset_layers(policy, t)}
    for e in planned.entries:
        swept_in = e.name not in named and not any(name_matches(e.name, p) for p in patterns)
        if e.in_features < order and not swept_in:
            raise ValueError(f"HO order {order} is wider than {e.name} (in_features={e.in_features}); "
                             "lower the order or exclude the layer")


class HOMixedScoresSDPA(MixedScoresSDPA):
    """MatNet's mixed-score attention with a high-order first mixer layer.

    The mixer maps (score s, cost d) -> 16 hidden -> 1 per head. Its first layer, split into
    the K=2 one-feature chunks, becomes HOLinear's prod(1 + z_i) - 1:
        h = z_s + z_d + alpha * z_s * z_d + b,   z_s = s w_s, z_d = d w_d.
    alpha is 1 (scratch: the exact operator) or a learnable per-head, per-unit `ho_scale`
    starting at 0 (convert: same scores as the plain mixer at conversion).
    """

    @classmethod
    def from_plain(cls, plain: MixedScoresSDPA, learnable_scale: bool) -> "HOMixedScoresSDPA":
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.num_heads, new.num_scores = plain.num_heads, plain.num_scores
        if plain.num_scores != 1:
            raise ValueError(f"HO mixer supports one cost matrix (num_scores=1), got {plain.num_scores}")
        for name in ("mix_W1", "mix_b1", "mix_W2", "mix_b2"):
            setattr(new, name, nn.Parameter(getattr(plain, name).detach().clone()))
        if learnable_scale:
            new.ho_scale = nn.Parameter(torch.zeros_like(new.mix_b1))  # [heads, hidden]
        else:
            new.register_parameter("ho_scale", None)
        return new

    def forward(self, q, k, v, attn_mask=None, dmat=None, dropout_p=0.0):
        if dmat is None:
            raise ValueError("MatNet mixed-score attention needs the cost matrix (dmat)")
        scores = q @ k.transpose(-2, -1) / k.size(-1) ** 0.5  # [b, h, m, n]
        w_s, w_d = self.mix_W1[:, 0], self.mix_W1[:, 1]  # [h, hidden] each
        z_s = scores.unsqueeze(-1) * w_s[:, None, None, :]  # [b, h, m, n, hidden]
        z_d = dmat[:, None, :, :, None] * w_d[:, None, None, :]
        alpha = 1.0 if self.ho_scale is None else self.ho_scale[:, None, None, :]
        hidden = F.relu(z_s + z_d + alpha * z_s * z_d + self.mix_b1[:, None, None, :])
        mixed = torch.einsum("bhmnk,hk->bhmn", hidden, self.mix_W2[..., 0]) + self.mix_b2[:, :, None]  # [h, 1, 1]
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                attn_mask = attn_mask.clone()
                attn_mask[~attn_mask.any(-1)] = True  # a fully masked row attends everywhere
                mixed = mixed.masked_fill(~attn_mask, float("-inf"))
            else:
                mixed = mixed + attn_mask
        weights = F.dropout(F.softmax(mixed, dim=-1), p=dropout_p) if dropout_p > 0 else F.softmax(mixed, dim=-1)
        return weights @ v
