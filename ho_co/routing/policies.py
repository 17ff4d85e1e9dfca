"""MatNet / AM policies built from config, with HOLinear placed by `replace_linear`.

`build_policy(name=..., ho={...})` is what the Hydra model configs instantiate: rl4co builds
the policy, then `apply_ho` swaps the chosen layers. Two ways in:

- scratch (`ho.mode: scratch`): `HOLinear(in, out, order=K)`, the paper's operator;
- convert (`ho.mode: convert`): `HOLinear.from_linear(linear, K)` on a trained policy
  (`init_from: CKPT`), same function at conversion, higher orders grow during fine-tuning.

Placement is a list of preset names (`attention`, `ffn`, `decoder`, `mixer`, ...) or
`replace_linear` name patterns. MatNet's mixed-score MLP is not an `nn.Linear` (it is raw
per-head parameters inside `MixedScoresSDPA`), so `replace_linear` cannot see it; the `mixer`
preset swaps that module for `HOMixedScoresSDPA`, which applies the same high-order operator
to the MLP's first layer (two inputs per head: attention score and cost; order 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from rl4co.models.common.constructive.autoregressive import AutoregressivePolicy
from rl4co.models.zoo.am import AttentionModelPolicy
from rl4co.models.zoo.matnet.decoder import MatNetDecoder
from rl4co.models.zoo.matnet.encoder import MatNetEncoder, MixedScoresSDPA

from ho_co.layers import HOLinear
from ho_co.replace import ReplaceReport, replace_linear
from ho_co.routing.fast import make_fast

# Preset placements: name -> replace_linear patterns, per policy family.
PLACEMENTS: dict[str, dict[str, list[str]]] = {
    "matnet": {
        "attention": ["encoder.*.Wq", "encoder.*.Wkv", "encoder.*.out_proj"],
        "ffn": ["encoder.*.ffn.*"],
        "decoder": ["decoder.*"],
    },
    "am": {
        "embedding": ["encoder.init_embedding.*"],
        "attention": ["encoder.*.Wqkv", "encoder.*.out_proj"],
        "ffn": ["encoder.*.lins.*"],
        "decoder": ["decoder.*"],
    },
}
MIXER = "mixer"  # MatNet's mixed-score MLP: not a Linear, handled by HOMixedScoresSDPA
MODES = ("scratch", "convert")


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


def matnet_policy(
    embed_dim: int = 256,
    num_encoder_layers: int = 5,
    num_heads: int = 16,
    feedforward_hidden: int = 512,
    normalization: str = "instance",
    use_graph_context: bool = False,
    bias: bool = False,
    init_embedding_mode: str = "RandomOneHot",
    tanh_clipping: float = 10.0,
    train_decode_type: str = "sampling",
    val_decode_type: str = "greedy",
    test_decode_type: str = "greedy",
) -> AutoregressivePolicy:
    """rl4co's MatNet (encoder, decoder) with every size reaching the modules.

    Assembled from rl4co's MatNetEncoder/MatNetDecoder as `MatNetPolicy` does, because
    MatNetPolicy 0.7.0 drops `feedforward_hidden` (its encoder is always 512 wide) and leaves
    logit clipping at 0 where MatNet uses 10.
    """
    return AutoregressivePolicy(
        encoder=MatNetEncoder(
            embed_dim=embed_dim,
            num_heads=num_heads,
            num_layers=num_encoder_layers,
            normalization=normalization,
            feedforward_hidden=feedforward_hidden,
            init_embedding_kwargs={"mode": init_embedding_mode},
            bias=bias,
        ),
        decoder=MatNetDecoder(
            env_name="atsp", embed_dim=embed_dim, num_heads=num_heads, use_graph_context=use_graph_context
        ),
        env_name="atsp",
        tanh_clipping=tanh_clipping,
        train_decode_type=train_decode_type,
        val_decode_type=val_decode_type,
        test_decode_type=test_decode_type,
    )


def am_policy(
    embed_dim: int = 128,
    num_encoder_layers: int = 6,
    num_heads: int = 8,
    feedforward_hidden: int = 512,
    normalization: str = "instance",
    use_graph_context: bool = False,
    tanh_clipping: float = 10.0,
    env_name: str = "tsp",
) -> AttentionModelPolicy:
    """rl4co's Attention Model policy with POMO's settings (6 layers, instance norm, no graph context)."""
    return AttentionModelPolicy(
        env_name=env_name,
        embed_dim=embed_dim,
        num_encoder_layers=num_encoder_layers,
        num_heads=num_heads,
        feedforward_hidden=feedforward_hidden,
        normalization=normalization,
        use_graph_context=use_graph_context,
        tanh_clipping=tanh_clipping,
    )


BUILDERS = {"matnet": matnet_policy, "am": am_policy}


def resolve_targets(family: str, targets: Iterable[str]) -> tuple[list[str], bool]:
    """Preset names -> patterns; also says whether the MatNet mixer was asked for."""
    presets = PLACEMENTS[family]
    patterns: list[str] = []
    mixer = False
    for t in targets:
        if t == MIXER:
            if family != "matnet":
                raise ValueError(f"the '{MIXER}' placement exists only in MatNet, not in {family!r}")
            mixer = True
        elif t == "all":
            patterns += [p for ps in presets.values() for p in ps]
            mixer = mixer or family == "matnet"
        elif t in presets:
            patterns += presets[t]
        else:
            patterns.append(t)  # a replace_linear pattern
    return patterns, mixer


def apply_ho(
    policy: nn.Module,
    family: str,
    order: int,
    targets: Iterable[str],
    exclude: Iterable[str] | None = None,
    mode: str = "scratch",
) -> ReplaceReport:
    """Put HOLinear (and the HO mixer) where `targets` say; returns replace_linear's report."""
    if mode not in MODES:
        raise ValueError(f"ho.mode must be one of {MODES}, got {mode!r}")
    patterns, mixer = resolve_targets(family, list(targets))
    if mode == "scratch":
        make = lambda lin: HOLinear(lin.in_features, lin.out_features, order=order, bias=lin.bias is not None)
    else:
        make = lambda lin: HOLinear.from_linear(lin, order)
    report = replace_linear(policy, make, targets=patterns, exclude=list(exclude or [])) if patterns else ReplaceReport()
    if mixer:
        if order != 2:
            raise ValueError(f"the MatNet mixer has 2 inputs per head, so its HO order is 2 (got ho.order={order})")
        for name, module in list(policy.named_modules()):
            if type(module) is MixedScoresSDPA:
                parent = policy.get_submodule(name.rpartition(".")[0])
                parent.sdpa_fn = HOMixedScoresSDPA.from_plain(module, learnable_scale=mode == "convert")
    return report


def read_policy_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The `policy.*` weights of a checkpoint (a training checkpoint, its weights-only export, or
    rl4co's) and the HO settings they were trained with (None: a plain policy). HOLinear keeps
    nn.Linear's parameter names, so only the stored config tells an HO policy from a plain one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init_from checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict", ckpt)
    policy_state = {k[len("policy."):]: v for k, v in state.items() if k.startswith("policy.")}
    if not policy_state:
        raise ValueError(f"{path}: no 'policy.*' weights in the checkpoint")
    trained_with = ckpt.get("ho_co", {}).get("config", {}).get("model", {}).get("policy", {})
    return policy_state, _check_ho(trained_with.get("ho"))


def load_policy_weights(policy: nn.Module, path: str | Path, state: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint's policy weights; they must fit exactly."""
    try:
        missing, unexpected = policy.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes differ
        raise ValueError(f"{path}: weights do not fit this policy ({str(err).splitlines()[-1].strip()})") from err
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit this policy (missing {missing[:5]}, unexpected {unexpected[:5]})")


def _architecture(ho: Mapping[str, Any] | None) -> tuple | None:
    """What HO settings change in the network (None: plain)."""
    if ho is None:
        return None
    return (int(ho.get("order", 2)), tuple(ho.get("targets") or ["all"]), tuple(ho.get("exclude") or []),
            ho.get("mode", "scratch"))


def check_one_hot_width(name: str, num_loc: int, embed_dim: int, init_embedding_mode: str = "RandomOneHot",
                        **_) -> None:
    """MatNet's column embeddings are one-hot over the embedding dimensions: N <= embed_dim."""
    if name == "matnet" and init_embedding_mode == "RandomOneHot" and num_loc > embed_dim:
        raise ValueError(
            f"N={num_loc} nodes, but MatNet's random one-hot embedding takes at most embed_dim={embed_dim} "
            "(raise model.policy.embed_dim or use init_embedding_mode=Random)"
        )


def _check_ho(ho: Mapping[str, Any] | None) -> dict | None:
    ho = dict(ho) if ho else None
    if ho is not None:
        unknown = set(ho) - {"order", "targets", "exclude", "mode"}
        if unknown:
            raise ValueError(f"unknown ho option(s) {sorted(unknown)}; expected order, targets, exclude, mode")
    return ho


def assemble_policy(name: str, ho: Mapping[str, Any] | None = None, fast: bool | str = False, **kwargs) -> nn.Module:
    """The architecture alone (fresh weights): how a checkpoint's policy is rebuilt to load it."""
    if name not in BUILDERS:
        raise ValueError(f"unknown policy {name!r}; expected one of {sorted(BUILDERS)}")
    policy = BUILDERS[name](**kwargs)
    ho = _check_ho(ho)
    if ho is not None:
        apply_ho(policy, name, int(ho.get("order", 2)), ho.get("targets") or ["all"], ho.get("exclude"),
                 ho.get("mode", "scratch"))
    return make_fast(policy, fast) if fast else policy


def build_policy(name: str, ho: Mapping[str, Any] | None = None, init_from: str | None = None, fast: bool | str = False,
                 **kwargs) -> nn.Module:
    """The policy `name` ("matnet" or "am") with sizes `kwargs`, HO layers from `ho`.

    fast: MatNet only: true for the same policy with ho_co.routing.fast's lean multi-start
    decoding loop, or a torch.compile mode ("reduce-overhead", ...) to also compile it on CUDA.

    ho: {order: K, targets: [presets or patterns], exclude: [...], mode: scratch|convert}
    or None for the plain policy. init_from: a checkpoint whose weights the policy starts from
    (a training checkpoint or its weights-only export): the same architecture, HO layers
    included; with mode=convert (where it is required), a plain policy that is then converted.
    """
    ho = _check_ho(ho)
    mode = (ho or {}).get("mode", "scratch")
    if init_from is None and mode == "convert":
        raise ValueError("ho.mode=convert needs model.policy.init_from=CKPT (a trained plain policy)")
    convert = mode == "convert"
    policy = assemble_policy(name, None if convert else ho, **kwargs)
    if init_from is not None:
        state, trained_with = read_policy_weights(init_from)
        if convert and trained_with is not None and _architecture(trained_with) == _architecture(ho):
            policy, convert = assemble_policy(name, ho, **kwargs), False  # converted already: continue it
        elif not (convert and trained_with is None) and _architecture(trained_with) != _architecture(ho):
            raise ValueError(
                f"{init_from} holds a policy trained with ho={trained_with}, but this run has ho={ho}: a warm "
                "start keeps the architecture (ho.mode=convert turns a trained plain policy into an HO one)")
        load_policy_weights(policy, init_from, state)
    if convert:
        apply_ho(policy, name, int(ho.get("order", 2)), ho.get("targets") or ["all"], ho.get("exclude"), mode)
    return make_fast(policy, fast) if fast else policy
