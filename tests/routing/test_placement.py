"""apply_ho across rl4co 0.7.0's model zoo (tiny sizes, CPU, each model on its default env): HO goes
in, a real training step of the rl4co module runs and reaches the HO layers, and a converted copy
decodes exactly as the plain policy. Plus what the presets select and how bad targets fail."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from rl4co.envs import ATSPEnv, TSPEnv
from rl4co.models import MDAM, POMO, AttentionModel, DeepACO, MatNet, PolyNet, SymNCO

import ho_co.routing
from ho_co.layers import HOLinear
from ho_co.routing.placement import DEFAULT_TARGETS, HOMixedScoresSDPA, apply_ho, linear_names, preset_layers
from ho_co.routing.policies import build_policy

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/routing/conftest.py

N = 6
AM = dict(embed_dim=16, num_encoder_layers=1, num_heads=2, feedforward_hidden=16)
DATA = dict(batch_size=4, train_data_size=8, val_data_size=4, test_data_size=4)
ENCODER = ["attention", "ffn"]  # the encoder's blocks, in every model that has them


def tsp():
    return TSPEnv(generator_params={"num_loc": N})


@dataclass
class Case:
    make: Callable  # the rl4co model (LightningModule) with a tiny policy on its default env
    targets: list[str]  # what the zoo table places
    replaced: list[str]  # the layers that placement turns into HOLinear


ZOO = {
    "AttentionModel": Case(lambda: AttentionModel(tsp(), policy_kwargs=AM, **DATA), ENCODER,
                           ["encoder.net.layers.0.0.module.Wqkv", "encoder.net.layers.0.0.module.out_proj",
                            "encoder.net.layers.0.2.module.lins.0", "encoder.net.layers.0.2.module.lins.1"]),
    "POMO": Case(lambda: POMO(tsp(), policy_kwargs=AM, **DATA), ENCODER,
                 ["encoder.net.layers.0.0.module.Wqkv", "encoder.net.layers.0.0.module.out_proj",
                  "encoder.net.layers.0.2.module.lins.0", "encoder.net.layers.0.2.module.lins.1"]),
    "SymNCO": Case(lambda: SymNCO(tsp(), policy_kwargs=AM, num_starts=N, num_augment=2, **DATA), ENCODER,
                   ["encoder.net.layers.0.0.module.Wqkv", "encoder.net.layers.0.0.module.out_proj",
                    "encoder.net.layers.0.2.module.lins.0", "encoder.net.layers.0.2.module.lins.1"]),
    "PolyNet": Case(lambda: PolyNet(tsp(), k=4, val_num_solutions=4, policy_kwargs=AM, **DATA), ["pointer"],
                    ["decoder.pointer.project_out", "decoder.pointer.poly_layer_1", "decoder.pointer.poly_layer_2"]),
    "MatNet": Case(lambda: MatNet(ATSPEnv(generator_params={"num_loc": N}),
                                  policy_params=dict(embed_dim=16, num_encoder_layers=1, num_heads=2), **DATA), ENCODER,
                   [f"encoder.layers.0.MHA.{block}_encoding_block.{layer}" for block in ("row", "col")
                    for layer in ("Wq", "Wkv", "out_proj")]
                   + [f"encoder.layers.0.F_{side}.ops.ffn.{i}" for side in "ab" for i in (0, 2)]),
    # MDAM's last encoder layer is its own MultiHeadAttentionMDAM (raw parameter matrices, no
    # nn.Linear): `attention` covers the layers before it, `ffn` all of them
    "MDAM": Case(lambda: MDAM(tsp(), policy_kwargs=dict(embed_dim=16, num_heads=2, num_encoder_layers=2), **DATA),
                 ENCODER, ["encoder.layers.0.0.module.Wqkv", "encoder.layers.0.0.module.out_proj",
                        "encoder.layers.0.2.module.lins.0", "encoder.layers.0.2.module.lins.1",
                        "encoder.projection.module.0", "encoder.projection.module.2"]),
    # non-autoregressive: a GNN encoder (no attention, no feed-forward block) that draws a heatmap.
    # Trained without rl4co's default TSP local search (2-opt in numba, not a dependency here);
    # the HO layers sit in the encoder either way
    "DeepACO": Case(lambda: DeepACO(tsp(), train_with_local_search=False, **DATA,
                                    policy_kwargs=dict(embed_dim=16, num_layers_graph_encoder=1, n_ants=dict(train=3))),
                    ["gnn"], [f"encoder.graph_network.layers.0.{n}" for n in ("v_lin1", "v_lin2", "v_lin3", "v_lin4", "e_lin")]),
}


def train_step(model) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One step of the rl4co module as Lightning runs it: setup, a batch of its own train data,
    training_step, backward, its optimizer's step. Returns the loss and the policy's gradients."""
    model.setup("fit")
    batch = next(iter(model.train_dataloader()))
    loss = model.training_step(batch, 0)["loss"]
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.policy.named_parameters() if p.grad is not None}
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    optimizer.step()
    return loss, grads


def holinears(policy) -> dict[str, HOLinear]:
    return {n: m for n, m in policy.named_modules() if isinstance(m, HOLinear)}


@pytest.mark.parametrize("name", list(ZOO))
def test_ho_trains_inside_every_zoo_model(name):
    case = ZOO[name]
    torch.manual_seed(0)
    model = case.make()
    plain = copy.deepcopy(model)
    report = apply_ho(model.policy, case.targets, order=2)
    assert [e.name for e in report.replaced] == case.replaced and not report.skipped
    assert sorted(holinears(model.policy)) == sorted(case.replaced)
    before = {n: m.weight.detach().clone() for n, m in holinears(model.policy).items()}

    torch.manual_seed(1)
    loss, grads = train_step(model)
    assert torch.isfinite(loss)
    torch.manual_seed(1)
    _, plain_grads = train_step(plain)
    reached = lambda g, layer: f"{layer}.weight" in g and bool(g[f"{layer}.weight"].abs().sum() > 0)
    for layer, module in holinears(model.policy).items():
        assert torch.isfinite(grads.get(f"{layer}.weight", torch.zeros(1))).all()
        # the loss reaches every HO layer the plain model's loss reaches (not: MatNet's row Wq on
        # its all-zero first row input, the node update of a GNN's last layer, which nothing reads)
        assert reached(grads, layer) == reached(plain_grads, layer), layer
        if reached(grads, layer):
            assert not torch.equal(module.weight, before[layer])  # and the optimizer moved it
    assert sum(reached(grads, layer) for layer in case.replaced) >= len(case.replaced) // 2


def decode(policy, env, td, name):
    torch.manual_seed(2)  # MatNet's random one-hot embeddings, DeepACO's ants
    with torch.no_grad():
        if name == "DeepACO":  # its output is the heatmap; the ants sample from it
            return {"heatmap": policy.encoder(td.clone())[0], **policy(td.clone(), env, phase="train")}
        return policy(td.clone(), env, phase="test", decode_type="greedy", return_actions=True)


@pytest.mark.parametrize("name", list(ZOO))
def test_converted_copy_decodes_as_the_plain_policy(name):
    torch.manual_seed(0)
    model = ZOO[name].make()
    plain = model.policy.eval()
    converted = copy.deepcopy(plain)
    report = apply_ho(converted, "all", order=2, mode="convert")
    assert len(report) >= len(ZOO[name].replaced)
    assert all(m.ho_scale is not None for m in holinears(converted).values())
    torch.manual_seed(1)
    td = model.env.reset(model.env.generator(batch_size=[3]))
    a, b = decode(plain, model.env, td, name), decode(converted, model.env, td, name)
    assert torch.equal(a["actions"], b["actions"])
    torch.testing.assert_close(b["reward"], a["reward"])
    torch.testing.assert_close(b["log_likelihood"], a["log_likelihood"], rtol=1e-5, atol=1e-5)
    if name == "DeepACO":
        torch.testing.assert_close(b["heatmap"], a["heatmap"], rtol=1e-5, atol=1e-6)


def test_a_policy_without_the_named_blocks_is_told_what_it_has():
    """DeepACO's GNN has no attention: `attention` refuses, naming the presets that fit."""
    policy = ZOO["DeepACO"].make().policy
    with pytest.raises(ValueError, match=r"preset 'attention' .* finds no linear layer in DeepACOPolicy; "
                                         r"presets that find layers here \(count\): embedding \(2\), gnn \(5\)"):
        ho_co.routing.apply_ho(policy, ENCODER)
    assert not holinears(policy)  # nothing half-done
    with pytest.raises(ValueError, match="'mixer' .* finds nothing in DeepACOPolicy"):
        apply_ho(policy, ["mixer"])
    linears = linear_names(policy)
    report = apply_ho(policy)  # the default placement, every linear layer, fits any policy
    assert [e.name for e in report.entries] == linears and len(linears) == 12  # embeddings, GNN, heatmap MLP
    assert [e.name for e in report.skipped] == ["encoder.edge_embedding.edge_embed"]  # 1 input: no order 2


def test_presets_mean_the_same_blocks_in_every_policy():
    am = ZOO["AttentionModel"].make().policy
    mdam = ZOO["MDAM"].make().policy
    matnet = build_policy("matnet", embed_dim=16, num_encoder_layers=1, num_heads=2, feedforward_hidden=16)
    assert DEFAULT_TARGETS == ("all",)
    assert preset_layers(am, "attention") == ["encoder.net.layers.0.0.module.Wqkv", "encoder.net.layers.0.0.module.out_proj"]
    assert preset_layers(mdam, "attention") == ["encoder.layers.0.0.module.Wqkv", "encoder.layers.0.0.module.out_proj"]
    assert preset_layers(am, "embedding") == ["encoder.init_embedding.init_embed"]
    assert preset_layers(mdam, "embedding") == ["init_embedding.init_embed"]  # outside MDAM's encoder
    assert preset_layers(am, "pointer") == ["decoder.pointer.project_out"]
    assert preset_layers(matnet, "context") == ["decoder.context_embedding.project_context"]
    assert len(preset_layers(mdam, "context")) == 5  # one context per MDAM path
    assert preset_layers(am, "decoder") == [n for n, m in am.decoder.named_modules(prefix="decoder")
                                            if isinstance(m, torch.nn.Linear)]


def test_orders_patterns_exclude_and_the_mixer_in_all():
    policy = build_policy("matnet", embed_dim=16, num_encoder_layers=1, num_heads=2, feedforward_hidden=16)
    report = apply_ho(policy, ["all"], order=4, exclude=["*ffn.2"])
    mixers = [e for e in report.entries if e.old_type == "MixedScoresSDPA"]
    assert len(mixers) == 2 and all("order is 2 (asked 4)" in e.skipped for e in mixers)
    assert not any(isinstance(m, HOMixedScoresSDPA) for m in policy.modules())
    names = holinears(policy)
    assert all(m.order == 4 for m in names.values())
    assert "encoder.layers.0.F_a.ops.ffn.0" in names and "encoder.layers.0.F_a.ops.ffn.2" not in names
    assert "decoder.pointer.project_out" in names

    am = ZOO["AttentionModel"].make().policy
    report = apply_ho(am, ["embedding", "*.out_proj"], order=2)  # a preset and a replace_linear pattern
    assert [e.name for e in report.replaced] == ["encoder.init_embedding.init_embed",
                                                 "encoder.net.layers.0.0.module.out_proj"]
    with pytest.raises(ValueError, match="matches no linear layer"):
        apply_ho(ZOO["AttentionModel"].make().policy, ["nonexistent_layer"])
    with pytest.raises(ValueError, match="mode must be one of"):
        apply_ho(am, mode="fresh")


def test_an_order_that_does_not_fit_is_an_error_naming_the_option_or_the_layer():
    """An order below 1, or wider than a layer a preset or pattern names, raises before anything
    changes; `all` skips (and reports) the layers narrower than the order, but an order that fits
    none raises."""
    am = ZOO["AttentionModel"].make().policy
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=rf"HO order must be an integer >= 1, got order={bad!r}"):
            apply_ho(am, order=bad)
    with pytest.raises(ValueError, match=r"HO order 4 is wider than encoder\.init_embedding\.init_embed "
                                         r"\(in_features=2\)"):
        apply_ho(am, ["embedding", "attention"], order=4)  # fits the attention, not the embedding
    with pytest.raises(ValueError, match=r"wider than encoder\.net\.layers\.0\.0\.module\.out_proj \(in_features=16\)"):
        apply_ho(am, ["*.out_proj"], order=17)
    assert not holinears(am)  # nothing half-done
    report = apply_ho(ZOO["AttentionModel"].make().policy, ["all"], order=4)  # `all` skips narrow layers
    assert "encoder.init_embedding.init_embed" in [e.name for e in report.skipped]
    assert report.replaced and all(e.in_features < 4 for e in report.skipped)
    one_input = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
    report = apply_ho(one_input, ["all"], order=2)  # a one-input layer has no order 2: left plain
    assert [e.name for e in report.skipped] == ["0"] and [e.name for e in report.replaced] == ["2"]
    with pytest.raises(ValueError, match=r"HO order 2 is wider than 0 \(in_features=1\)"):
        apply_ho(torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8)), ["0"])
    with pytest.raises(ValueError, match=r"HO order 2 fits no targeted layer of Sequential: the widest has in_features=1"):
        apply_ho(torch.nn.Sequential(torch.nn.Linear(1, 8)), ["all"])


def test_cached_leaves_the_decoding_step_plain():
    """`cached`: HO on every layer a decoder does not run at each step (encoder, init embedding,
    the cached projections; MatNet's mixer), plain pointer and context, in AM, PolyNet and MatNet."""
    am = ZOO["AttentionModel"].make().policy
    linears = set(linear_names(am))
    apply_ho(am, ["cached"])
    step = {"decoder.pointer.project_out", "decoder.context_embedding.project_context"}
    assert set(holinears(am)) == linears - step and step <= linears
    assert "encoder.init_embedding.init_embed" in holinears(am) and "decoder.project_node_embeddings" in holinears(am)

    polynet = ZOO["PolyNet"].make().policy  # its poly layers live in the pointer: they run every step
    apply_ho(polynet, ["cached"])
    assert not any(n.startswith("decoder.pointer.") for n in holinears(polynet))

    matnet = build_policy("matnet", embed_dim=16, num_encoder_layers=1, num_heads=2, feedforward_hidden=16)
    apply_ho(matnet, ["cached"])
    assert sum(isinstance(m, HOMixedScoresSDPA) for m in matnet.modules()) == 2
    assert not step & set(holinears(matnet)) and "decoder.project_fixed_context" in holinears(matnet)
