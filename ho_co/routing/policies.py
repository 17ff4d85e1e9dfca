"""MatNet / AM policies built from config, with HO layers placed by `apply_ho`.

`build_policy(name=..., ho={...})` is what the Hydra model configs instantiate: rl4co builds
the policy, then `ho_co.routing.placement.apply_ho` swaps the chosen layers. Two ways in:

- scratch (`ho.mode: scratch`): `HOLinear(in, out, order=K)`, the paper's operator;
- convert (`ho.mode: convert`): `HOLinear.from_linear(linear, K)` on a trained policy
  (`init_from: CKPT`), same function at conversion, higher orders grow during fine-tuning.

Placement (`ho.targets`) is a list of apply_ho's presets (`attention`, `ffn`, `decoder`,
`mixer`, `all`, ...) or `replace_linear` name patterns; null is apply_ho's default placement.

`fast` wraps a MatNet policy in the lean CPU engine (`ho_co.routing.fast`). This module is the
routing client's one way into the engine, so the engine's files can change behind `make_fast`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from rl4co.models.common.constructive.autoregressive import AutoregressivePolicy
from rl4co.models.zoo.am import AttentionModelPolicy
from rl4co.models.zoo.matnet.decoder import MatNetDecoder
from rl4co.models.zoo.matnet.encoder import MatNetEncoder

from ho_co.routing.checkpoints import policy_weights, read_checkpoint, run_config
from ho_co.routing.fast import make_fast
from ho_co.routing.one_hot import WideOneHotEmbedding
from ho_co.routing.placement import DEFAULT_TARGETS, apply_ho


def matnet_policy(
    env_name: str = "atsp",
    embed_dim: int = 256,
    num_encoder_layers: int = 5,
    num_heads: int = 16,
    feedforward_hidden: int = 512,
    normalization: str = "instance",
    init_embedding_kwargs: Mapping[str, Any] | None = None,
    one_hot_positions: int | None = None,
    use_graph_context: bool = False,
    bias: bool = False,
    temperature: float = 1.0,
    tanh_clipping: float = 10.0,
    mask_logits: bool = True,
    train_decode_type: str = "sampling",
    val_decode_type: str = "greedy",
    test_decode_type: str = "greedy",
) -> AutoregressivePolicy:
    """rl4co's MatNet (encoder, decoder) with every size reaching the modules.

    Takes `MatNetPolicy`'s arguments, so rl4co code written for `MatNet(env, policy_params=...)`
    builds the same network here. Assembled from rl4co's MatNetEncoder/MatNetDecoder as
    `MatNetPolicy` does, because MatNetPolicy 0.7.0 drops `feedforward_hidden` (its encoder is
    always 512 wide) and leaves logit clipping at 0 where MatNet uses 10.

    one_hot_positions: draw each instance's column one-hots among this many positions (MatNet's
    `one_hot_seed_cnt`, at most embed_dim); None keeps rl4co's draw among the N node positions.
    Either way the embedding is `WideOneHotEmbedding`, which also takes positions seeded per
    instance from the decoder (`ho_co.routing.decode`).
    """
    if env_name != "atsp":
        raise ValueError(f"env_name={env_name!r}: ho-co's MatNet decodes cost-matrix tours (env_name='atsp')")
    init_embedding_kwargs = {"mode": "RandomOneHot", **(init_embedding_kwargs or {})}
    init_embedding = None  # rl4co's, for mode=Random
    if init_embedding_kwargs["mode"] == "RandomOneHot":  # rl4co's draw, and one seeded per instance in decoding
        init_embedding = WideOneHotEmbedding(embed_dim, one_hot_positions)
    elif one_hot_positions is not None:
        raise ValueError(f"one_hot_positions needs init_embedding_kwargs.mode=RandomOneHot, "
                         f"not {init_embedding_kwargs['mode']!r}")
    return AutoregressivePolicy(
        encoder=MatNetEncoder(
            embed_dim=embed_dim,
            num_heads=num_heads,
            num_layers=num_encoder_layers,
            normalization=normalization,
            feedforward_hidden=feedforward_hidden,
            init_embedding=init_embedding,
            init_embedding_kwargs=init_embedding_kwargs,
            bias=bias,
        ),
        decoder=MatNetDecoder(
            env_name=env_name, embed_dim=embed_dim, num_heads=num_heads, use_graph_context=use_graph_context
        ),
        env_name=env_name,
        temperature=temperature,
        tanh_clipping=tanh_clipping,
        mask_logits=mask_logits,
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


def read_policy_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The `policy.*` weights of a checkpoint (a training checkpoint, its weights-only export, or
    rl4co's) and the HO settings they were trained with (None: a plain policy)."""
    weights, ho = policy_weights(read_checkpoint(path, "init_from checkpoint"), path)
    return weights, _check_ho(ho)


def policy_from_checkpoint(path: str | Path, device="cpu"):
    """(policy, env, config) rebuilt from a `ho-co train` checkpoint (full or weights-only), in
    eval mode on `device`: the stored config gives the architecture, the file its weights."""
    from hydra.utils import instantiate

    checkpoint = read_checkpoint(path)
    cfg = run_config(checkpoint, path)
    env = instantiate(cfg["env"])
    policy_cfg = policy_options(cfg["model"]["policy"])
    weights, ho = policy_weights(checkpoint, path)
    sizes = {k: v for k, v in policy_cfg.items() if k not in ("name", "ho", "fast", "init_from")}
    policy = BUILDERS[policy_cfg["name"]](**sizes)
    if ho is not None:
        place_ho(policy, _check_ho(ho))
    load_policy_weights(policy, path, weights)
    fast = policy_cfg.get("fast")
    policy = make_fast(policy, fast) if fast else policy
    return policy.to(device).eval(), env, cfg


def policy_options(policy_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """`build_policy`'s keyword arguments in a `model.policy` config: all of it but Hydra's `_target_`."""
    return {k: v for k, v in policy_cfg.items() if k != "_target_"}


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
    return (int(ho.get("order", 2)), tuple(ho.get("targets") or DEFAULT_TARGETS), tuple(ho.get("exclude") or []),
            ho.get("mode", "scratch"))


def check_one_hot_width(name: str, num_loc: int, embed_dim: int = 256,
                        init_embedding_kwargs: Mapping[str, Any] | None = None,
                        one_hot_positions: int | None = None, **_) -> None:
    """MatNet's column embeddings are one-hot over the embedding dimensions (or the first
    `one_hot_positions` of them): N may not exceed that width."""
    if name != "matnet" or (init_embedding_kwargs or {}).get("mode", "RandomOneHot") != "RandomOneHot":
        return
    if one_hot_positions is not None and num_loc > one_hot_positions:
        raise ValueError(f"N={num_loc} nodes, but MatNet's one-hot embedding draws among "
                         f"one_hot_positions={one_hot_positions} (raise model.policy.one_hot_positions)")
    if num_loc > embed_dim:
        raise ValueError(
            f"N={num_loc} nodes, but MatNet's random one-hot embedding takes at most embed_dim={embed_dim} "
            "(raise model.policy.embed_dim or use init_embedding_kwargs.mode=Random)"
        )


def _check_ho(ho: Mapping[str, Any] | None) -> dict | None:
    ho = dict(ho) if ho else None
    if ho is not None:
        unknown = set(ho) - {"order", "targets", "exclude", "mode"}
        if unknown:
            raise ValueError(f"unknown ho option(s) {sorted(unknown)}; expected order, targets, exclude, mode")
    return ho


def place_ho(policy: nn.Module, ho: Mapping[str, Any]) -> None:
    """apply_ho with a config's `ho` settings (the order as given: apply_ho refuses 2.5, not rounds it)."""
    apply_ho(policy, ho.get("targets") or None, ho.get("order", 2), ho.get("mode", "scratch"), ho.get("exclude"))


def build_policy(name: str, ho: Mapping[str, Any] | None = None, init_from: str | None = None, fast: bool | str = False,
                 **kwargs) -> nn.Module:
    """The policy `name` ("matnet" or "am") with sizes `kwargs`, HO layers from `ho`.

    fast: MatNet only: true for the same policy with ho_co.routing.fast's lean multi-start
    decoding loop, or a torch.compile mode ("reduce-overhead", ...) to also compile it on CUDA.

    ho: {order: K, targets: [presets or patterns], exclude: [...], mode: scratch|convert}
    or None for the plain policy. init_from: a checkpoint whose weights the policy starts from
    (a training checkpoint or its weights-only export, or the checkpoint itself when rebuilding
    it): the same architecture, HO layers included; with mode=convert (where it is required), a
    plain policy that is then converted.
    """
    if name not in BUILDERS:
        raise ValueError(f"unknown policy {name!r}; expected one of {sorted(BUILDERS)}")
    ho = _check_ho(ho)
    convert = ho is not None and ho.get("mode", "scratch") == "convert"
    if init_from is None and convert:
        raise ValueError("ho.mode=convert needs model.policy.init_from=CKPT (a trained plain policy)")
    policy = BUILDERS[name](**kwargs)
    if init_from is not None:
        state, trained_with = read_policy_weights(init_from)
        convert = convert and trained_with is None  # a checkpoint converted already continues as it is
        if not convert and _architecture(trained_with) != _architecture(ho):
            raise ValueError(
                f"{init_from} holds a policy trained with ho={trained_with}, but this run has ho={ho}: a warm "
                "start keeps the architecture (ho.mode=convert turns a trained plain policy into an HO one)")
    if ho is not None and not convert:
        place_ho(policy, ho)
    if init_from is not None:
        load_policy_weights(policy, init_from, state)
    if convert:
        place_ho(policy, ho)
    return make_fast(policy, fast) if fast else policy
