import pytest
import torch
from rl4co.envs import TSPEnv

from ho_co.layers import HOLinear
from ho_co.routing.envs import make_env
from ho_co.routing.placement import HOMixedScoresSDPA, apply_ho, linear_names
from ho_co.routing.policies import build_policy, check_one_hot_width
from rl4co.models.zoo.matnet.encoder import MixedScoresSDPA

TINY = dict(embed_dim=16, num_encoder_layers=2, num_heads=2, feedforward_hidden=24)


def holinears(policy):
    return {n for n, m in policy.named_modules() if isinstance(m, HOLinear)}


def test_config_sizes_reach_the_modules():
    p = build_policy("matnet", **TINY)
    assert len(p.encoder.layers) == 2
    assert p.encoder.layers[0].F_a.ops.ffn[0].out_features == 24  # MatNetPolicy would give 512
    assert p.encoder.layers[0].MHA.row_encoding_block.Wq.in_features == 16
    assert p.encoder.layers[0].MHA.row_encoding_block.num_heads == 2
    assert p.tanh_clipping == 10.0


def test_presets_place_holinear_where_asked():
    p = build_policy("matnet", ho={"order": 2, "targets": ["attention"]}, **TINY)
    names = holinears(p)
    assert names and all(n.startswith("encoder.") and n.rsplit(".", 1)[1] in {"Wq", "Wkv", "out_proj"} for n in names)
    assert len(names) == 2 * 2 * 3  # layers x (row, col) x (Wq, Wkv, out_proj)
    p = build_policy("matnet", ho={"order": 3, "targets": ["ffn", "decoder"], "exclude": ["*project_out"]}, **TINY)
    names = holinears(p)
    assert "decoder.project_node_embeddings" in names and "decoder.pointer.project_out" not in names
    assert all(m.order == 3 for m in p.modules() if isinstance(m, HOLinear))
    assert not any(isinstance(m, HOMixedScoresSDPA) for m in p.modules())


def test_mixer_preset_swaps_the_mixed_score_mlp():
    p = build_policy("matnet", ho={"order": 2, "targets": ["mixer"]}, **TINY)
    assert not holinears(p)
    assert sum(isinstance(m, HOMixedScoresSDPA) for m in p.modules()) == 4
    with pytest.raises(ValueError, match="order is 2"):
        build_policy("matnet", ho={"order": 3, "targets": ["mixer"]}, **TINY)


def test_bad_ho_options_are_named():
    with pytest.raises(ValueError, match="matches no linear layer"):
        build_policy("matnet", ho={"order": 2, "targets": ["nonexistent_layer"]}, **TINY)
    with pytest.raises(ValueError, match="unknown ho option"):
        build_policy("matnet", ho={"order": 2, "oder": 3}, **TINY)
    with pytest.raises(ValueError, match="needs model.policy.init_from"):
        build_policy("matnet", ho={"order": 2, "mode": "convert"}, **TINY)
    with pytest.raises(TypeError):
        build_policy("matnet", embedding_dim=16)  # a misspelt size is not silently ignored


def test_ho_mixer_convert_equals_plain_and_scratch_differs():
    torch.manual_seed(0)
    plain = MixedScoresSDPA(num_heads=2)
    q, k, v = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 6, 4), torch.randn(3, 2, 6, 4)
    dmat = torch.rand(3, 5, 6)
    mask = torch.rand(3, 1, 5, 6) > 0.3
    ref = plain(q, k, v, attn_mask=mask.clone(), dmat=dmat)
    conv = HOMixedScoresSDPA.from_plain(plain, learnable_scale=True)
    torch.testing.assert_close(conv(q, k, v, attn_mask=mask.clone(), dmat=dmat), ref)
    scratch = HOMixedScoresSDPA.from_plain(plain, learnable_scale=False)
    assert not torch.allclose(scratch(q, k, v, dmat=dmat), plain(q, k, v, dmat=dmat))


def rollout(policy, env, td, seed=0):
    torch.manual_seed(seed)  # MatNet's one-hot embeddings are random
    return policy(td.clone(), env, phase="test", decode_type="multistart_greedy", num_starts=6,
                  return_actions=True, return_entropy=False)


def test_converted_matnet_checkpoint_has_identical_outputs(tmp_path):
    env = make_env("atsp", 6)
    torch.manual_seed(1)
    plain = build_policy("matnet", **TINY)
    ckpt = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {f"policy.{k}": v for k, v in plain.state_dict().items()}}, ckpt)
    ho = {"order": 2, "targets": ["all"], "mode": "convert"}
    converted = build_policy("matnet", ho=ho, init_from=str(ckpt), **TINY)
    assert len(holinears(converted)) > 20
    assert all(m.ho_scale is not None for m in converted.modules() if isinstance(m, HOLinear))
    td = env.reset(env.generator(4))
    a, b = rollout(plain, env, td), rollout(converted, env, td)
    torch.testing.assert_close(b["log_likelihood"], a["log_likelihood"], rtol=1e-5, atol=1e-5)
    assert torch.equal(a["actions"], b["actions"])
    # and the converted model can move away from MatNet: ho_scale gets a gradient
    torch.manual_seed(0)
    out = converted(td.clone(), env, phase="train", decode_type="multistart_sampling", num_starts=6)
    out["log_likelihood"].sum().backward()
    scale = converted.decoder.project_node_embeddings.ho_scale  # (MatNet's first row input is zeros)
    assert scale.grad is not None and scale.grad.abs().sum() > 0


def test_init_from_with_wrong_architecture_is_refused(tmp_path):
    torch.save({"state_dict": {"policy.encoder.x": torch.zeros(1)}}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="bad.ckpt"):
        build_policy("matnet", ho={"order": 2, "mode": "convert"}, init_from=str(tmp_path / "bad.ckpt"), **TINY)


def test_same_switch_on_attention_model_policy():
    env = TSPEnv(generator_params={"num_loc": 6})
    p = build_policy("am", ho={"order": 2, "targets": ["attention", "ffn"]}, **TINY)
    names = holinears(p)
    assert any(n.endswith("Wqkv") for n in names) and any(".lins." in n for n in names)
    out = p(env.reset(batch_size=[3]), env, phase="test", decode_type="multistart_greedy", num_starts=6)
    assert out["reward"].shape == (18,) and torch.isfinite(out["reward"]).all()
    with pytest.raises(ValueError, match="finds nothing in AttentionModelPolicy"):
        apply_ho(build_policy("am", **TINY), ["mixer"])


def test_a_converted_run_is_rebuilt_from_its_own_checkpoint(tmp_path):
    """`ho-co eval` rebuilds a policy with build_policy from the checkpoint's config and weights,
    also for a run that converted a plain checkpoint (whose init_from is gone by then)."""
    from ho_co.routing.policies import policy_from_checkpoint

    torch.manual_seed(2)
    ho = {"order": 2, "targets": ["attention", "mixer"], "exclude": [], "mode": "convert"}
    plain = build_policy("matnet", **TINY)
    torch.save({"state_dict": {f"policy.{k}": v for k, v in plain.state_dict().items()}}, tmp_path / "plain.ckpt")
    tuned = build_policy("matnet", ho=ho, init_from=str(tmp_path / "plain.ckpt"), **TINY)
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if name.endswith("ho_scale"):
                p.uniform_(0.1, 0.2)  # as if fine-tuned: not what a fresh conversion holds
    config = {"env": {"_target_": "ho_co.routing.envs.ATSPMatrixEnv", "generator_params": {"num_loc": 6}},
              "model": {"policy": {"_target_": "ho_co.routing.policies.build_policy", "name": "matnet", **TINY,
                                   "ho": ho, "init_from": str(tmp_path / "gone.ckpt"), "fast": True}}}
    torch.save({"state_dict": {f"policy.{k}": v.to(torch.bfloat16) for k, v in tuned.state_dict().items()},
                "ho_co": {"config": config}}, tmp_path / "tuned.ckpt")
    policy, _env, _cfg = policy_from_checkpoint(tmp_path / "tuned.ckpt")
    rebuilt = policy.state_dict()
    assert rebuilt.keys() == tuned.state_dict().keys()
    for k, v in tuned.state_dict().items():
        torch.testing.assert_close(rebuilt[k], v.to(torch.bfloat16).float())  # the export's bf16, read as fp32
    assert sum(isinstance(m, HOMixedScoresSDPA) and m.ho_scale is not None for m in policy.modules()) == 4


def test_ho_without_targets_is_the_default_placement():
    p = build_policy("am", ho={"order": 2}, **TINY)
    expected = build_policy("am", ho={"order": 2, "targets": ["all"]}, **TINY)
    linears = set(linear_names(build_policy("am", **TINY)))
    assert holinears(p) == holinears(expected) == linears


def test_rl4co_matnet_policy_arguments_build_the_same_network():
    from rl4co.models.zoo.matnet.policy import MatNetPolicy

    args = dict(env_name="atsp", embed_dim=16, num_encoder_layers=2, num_heads=2, temperature=2.0,
                mask_logits=True, init_embedding_kwargs={"mode": "RandomOneHot"}, tanh_clipping=0.0)
    theirs = MatNetPolicy(**args)
    ours = build_policy("matnet", **args)  # rl4co's ff width is always 512, ours defaults to it
    assert ours.temperature == 2.0 and ours.tanh_clipping == 0.0
    assert build_policy("matnet", mask_logits=False, **TINY).mask_logits is False
    ours.load_state_dict(theirs.state_dict())  # strict: the same modules, names and shapes
    env = make_env("tsp", num_loc=6)
    td = env.reset(batch_size=[3])
    outs = []
    for policy in (theirs, ours):
        torch.manual_seed(1)
        outs.append(policy(td.clone(), env, decode_type="sampling", return_actions=True))
    assert torch.equal(outs[0]["actions"], outs[1]["actions"])
    torch.testing.assert_close(outs[0]["log_likelihood"], outs[1]["log_likelihood"])


def test_matnet_arguments_it_cannot_honour_are_refused():
    with pytest.raises(ValueError, match="env_name='ffsp'"):
        build_policy("matnet", env_name="ffsp", **TINY)
    with pytest.raises(ValueError, match="one_hot_positions=17 must be between 1 and embed_dim=16"):
        build_policy("matnet", one_hot_positions=17, **TINY)
    with pytest.raises(ValueError, match="needs init_embedding_kwargs.mode=RandomOneHot"):
        build_policy("matnet", one_hot_positions=8, init_embedding_kwargs={"mode": "Random"}, **TINY)
    random_mode = build_policy("matnet", init_embedding_kwargs={"mode": "Random"}, **TINY)
    assert random_mode.encoder.init_embedding.mode == "Random"


def one_hot_positions_drawn(policy, num_loc, batch=64):
    td = make_env("tsp", num_loc=num_loc).reset(batch_size=[batch])
    _, col_emb, _ = policy.encoder.init_embedding(td)
    assert torch.equal(col_emb.sum(-1), torch.ones(batch, num_loc))  # one position per node
    position = col_emb.argmax(-1)
    assert all(len(set(row.tolist())) == num_loc for row in position)  # distinct within an instance
    return position


def test_one_hot_draw_range_is_a_policy_setting():
    torch.manual_seed(0)
    rl4co_draw = one_hot_positions_drawn(build_policy("matnet", **TINY), num_loc=5)
    assert rl4co_draw.max() == 4  # rl4co's draw: the first N positions only
    wide = build_policy("matnet", one_hot_positions=12, **TINY)
    wide_draw = one_hot_positions_drawn(wide, num_loc=5)
    assert wide_draw.max() == 11 and wide_draw.min() == 0  # every position of the range gets trained
    torch.manual_seed(3)
    first = one_hot_positions_drawn(wide, num_loc=5)
    torch.manual_seed(3)
    assert torch.equal(first, one_hot_positions_drawn(wide, num_loc=5))  # seeded like rl4co's draw
    with pytest.raises(ValueError, match="N=13 nodes, but the one-hot embedding draws among one_hot_positions=12"):
        one_hot_positions_drawn(wide, num_loc=13)


def test_one_hot_width_check_names_the_setting_that_limits_it():
    check_one_hot_width("matnet", num_loc=50, embed_dim=64, one_hot_positions=50)
    with pytest.raises(ValueError, match="one_hot_positions=40"):
        check_one_hot_width("matnet", num_loc=50, embed_dim=64, one_hot_positions=40)
    with pytest.raises(ValueError, match="embed_dim=32"):
        check_one_hot_width("matnet", num_loc=50, embed_dim=32)
    check_one_hot_width("matnet", num_loc=50, embed_dim=32, init_embedding_kwargs={"mode": "Random"})
