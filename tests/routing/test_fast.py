"""The fast MatNet decoding loop computes what rl4co's loop computes: same tours, rewards,
log-likelihoods and gradients on the same inputs, weights and seeds (CPU, small N)."""

import copy
import pickle

import pytest
import rl4co
import torch
from rl4co.models.zoo.am.decoder import AttentionModelDecoder

from ho_co.layers import HOLinear
from ho_co.routing.envs import make_env
from ho_co.routing.fast import FastMatNetPolicy, make_fast
from ho_co.routing.fast.loop import additive_mask, pointer_step, step_tables
from ho_co.routing.policies import build_policy

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/routing/conftest.py

TINY = {"embed_dim": 16, "num_encoder_layers": 2, "num_heads": 2, "feedforward_hidden": 24}
N, B = 8, 5
VARIANTS = {
    "matnet": None,
    "ho_matnet": {"order": 2, "targets": ["attention", "ffn"]},  # configs/model/ho_matnet.yaml
    "ho_everywhere": {"order": 2, "targets": ["all"]},  # HOLinear in the decoder (no split, no fold), HO mixer
}


def pair(variant, seed=0, **kwargs):
    """(rl4co's plain policy, the fast one sharing nothing but equal weights)."""
    torch.manual_seed(seed)
    plain = build_policy("matnet", ho=VARIANTS[variant], **TINY, **kwargs)
    fast = make_fast(copy.deepcopy(plain))
    return plain, fast


def instances(problem, seed=1, batch=B, num_loc=N):
    env = make_env(problem, num_loc)
    torch.manual_seed(seed)
    return env, env.reset(env.generator(batch))


def run(policy, env, td, seed=2, **kwargs):
    torch.manual_seed(seed)  # MatNet's random one-hot embeddings and the sampling
    return policy(td.clone(), env, **kwargs)


def assert_same(a, b, keys=("reward", "log_likelihood")):
    assert torch.equal(a["actions"], b["actions"])
    for k in keys:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("problem", ["tsp", "atsp"])
def test_greedy_multistart_matches_rl4co(variant, problem):
    plain, fast = pair(variant)
    env, td = instances(problem)
    a = run(plain, env, td, phase="test", decode_type="multistart_greedy")
    b = run(fast, env, td, phase="test", decode_type="multistart_greedy")
    assert b["actions"].shape == (N * B, N)
    assert_same(a, b)
    assert torch.equal(b["actions"].sort(-1).values, torch.arange(N).expand(N * B, N))
    assert (b["actions"][:, 0] == torch.arange(N).repeat_interleave(B)).all()  # rl4co's start-node layout


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("tail", ["kernel", "eager"])
def test_sampling_draws_the_same_tours_and_gradients(variant, tail, monkeypatch):
    """With the pointer's tail on the CPU kernel (pointer_kernel.cpp) and as eager torch ops."""
    from ho_co.routing.fast import pointer_tail

    if tail == "eager":
        monkeypatch.setattr(pointer_tail, "pointer_tail_applies", lambda *a: False)
    plain, fast = pair(variant)
    env, td = instances("tsp")
    grads, rng_after = [], []
    for policy in (plain, fast):
        out = run(policy, env, td, phase="train", decode_type="multistart_sampling")
        rng_after.append(torch.get_rng_state())  # the same draws, so the next batch is the same too
        reward = out["reward"].view(N, B)
        loss = -((reward - reward.mean(0)) * out["log_likelihood"].view(N, B)).mean()  # POMO's shared baseline
        policy.zero_grad()
        loss.backward()
        grads.append({n: p.grad for n, p in policy.named_parameters() if p.grad is not None})
        out["loss"] = loss.detach()
        grads[-1]["_out"] = out
    a, b = grads[0].pop("_out"), grads[1].pop("_out")
    assert torch.equal(rng_after[0], rng_after[1])
    assert_same(a, b, keys=("reward", "log_likelihood", "loss"))
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("replay", ["tour_logits", "tour_sdpa"])
def test_the_tour_pass_reuses_the_rollouts_attention_with_the_same_gradients(monkeypatch, replay):
    """On CPU the pass over the chosen tours takes the rollout's attention outputs and runs only
    their backward (on split score tables, or on per-row queries when the query does not split);
    recomputing them gives the same log-likelihoods and gradients."""
    from ho_co.routing.fast import loop as fast_module

    _, policy = pair("matnet")
    env, td = instances("tsp")
    if replay == "tour_sdpa":
        monkeypatch.setattr(fast_module, "split_scores_apply", lambda *a: False)
    replays = []
    original = getattr(fast_module.RolloutAttention, replay)
    monkeypatch.setattr(fast_module.RolloutAttention, replay,
                        lambda self, *a, **kw: replays.append(1) or original(self, *a, **kw))
    results = []
    for reuse in (True, False):
        monkeypatch.setattr(fast_module.RolloutAttention, "applies", staticmethod(lambda *a: reuse))
        out = run(policy, env, td, phase="train", decode_type="multistart_sampling")
        policy.zero_grad()
        (out["log_likelihood"] * out["reward"]).mean().backward()
        results.append((out, {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}))
    assert replays == [1]  # the first run replayed, the second recomputed
    (kept, kept_grads), (recomputed, recomputed_grads) = results
    assert_same(kept, recomputed)
    # The replay's backward is the glimpse kernel's, the recomputation's aten's: float sums in
    # another order. A gradient that is 0 in exact arithmetic (the mixer's output bias: softmax
    # ignores a shift) holds only that noise, so the floor scales with the largest gradient.
    floor = 1e-5 * max(grad.abs().max().item() for grad in recomputed_grads.values())
    for name, grad in recomputed_grads.items():
        torch.testing.assert_close(kept_grads[name], grad, rtol=1e-4, atol=floor, msg=name)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_given_tours_are_evaluated_like_rl4co_without_a_rollout(variant, monkeypatch):
    """`actions=` (rl4co's multi-start evaluation, what teacher forcing trains on) takes the one
    pass over the tours: rl4co's log-likelihoods per step and gradients, and no decoding step."""
    from ho_co.routing.fast import loop as fast_module

    plain, fast = pair(variant)
    env, td = instances("tsp")
    torch.manual_seed(7)
    tours = torch.stack([torch.randperm(N) for _ in range(2 * N * B)])  # 2N starts: every node twice
    starts = torch.arange(2 * N).repeat_interleave(B) % N
    tails = torch.stack([t[t != s] for t, s in zip(tours, starts)])
    steps, split = [], []
    monkeypatch.setattr(fast_module, "pointer_step", lambda *a, **kw: steps.append(1))
    kernel = fast_module.split_tour_logits
    monkeypatch.setattr(fast_module, "split_tour_logits", lambda *a, **kw: split.append(1) or kernel(*a, **kw))
    results = []
    for policy in (plain, fast):
        out = run(policy, env, td, phase="train", actions=tails, num_starts=2 * N, return_sum_log_likelihood=False)
        policy.zero_grad()
        out["log_likelihood"].sum(-1).mean().neg().backward()
        results.append((out, {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}))
    (a, a_grads), (b, b_grads) = results
    assert steps == []
    # the glimpse kernel on split score tables where the context projection is a plain Linear
    assert split == ([] if variant == "ho_everywhere" or fast_module.glimpse_kernel() is None else [1])
    assert torch.equal(b["actions"][:, 1:], tails) and (b["actions"][:, 0] == starts).all()
    assert_same(a, b)
    assert (b["log_likelihood"][:, [0, -1]] == 0).all() and (b["log_likelihood"][:, 1:-1] < 0).all()
    assert a_grads.keys() == b_grads.keys() and len(a_grads) > 10
    floor = 1e-5 * max(grad.abs().max().item() for grad in a_grads.values())  # the fused mixer's float sums
    for name in a_grads:
        torch.testing.assert_close(b_grads[name], a_grads[name], rtol=1e-4, atol=floor, msg=name)


def test_actions_that_are_not_tours_are_refused():
    """A start that visits a node twice never ends rl4co's loop within the actions; here it is one line."""
    plain, fast = pair("matnet")
    env, td = instances("tsp")
    tails = torch.arange(1, N).repeat(N * B, 1)  # start 0 gets a tour; every start s != 0 visits node s twice
    with pytest.raises(IndexError):
        run(plain, env, td, actions=tails, num_starts=N)
    with pytest.raises(ValueError, match=f"actions: row {B} does not complete a tour from its start node 1 "
                                         f"\\({(N - 1) * B} such rows\\)"):
        run(fast, env, td, actions=tails, num_starts=N)


def test_fewer_starts_per_step_logprobs_and_hidden():
    plain, fast = pair("ho_matnet")
    env, td = instances("atsp")
    kw = {"phase": "test", "decode_type": "multistart_greedy", "num_starts": 3, "return_sum_log_likelihood": False,
              "return_hidden": True}
    a, b = run(plain, env, td, **kw), run(fast, env, td, **kw)
    assert b["log_likelihood"].shape == (3 * B, N)
    assert_same(a, b)
    assert (b["log_likelihood"][:, [0, -1]] == 0).all()
    for field in ("node_embeddings", "glimpse_key", "glimpse_val", "logit_key"):  # rl4co returns its decoder cache
        # the fused mixer sums in another order, so the encoder agrees to float rounding: rl4co's own
        # encoder moves by 2e-5 here when the cost matrix moves by one ulp
        torch.testing.assert_close(getattr(a["hidden"], field), getattr(b["hidden"], field), rtol=1e-5, atol=5e-5)


def test_other_decodings_fall_back_to_rl4co():
    plain, fast = pair("matnet")
    env, td = instances("tsp")
    for kw in ({"decode_type": "greedy"}, {"decode_type": "multistart_sampling", "top_k": 3},
               {"decode_type": "multistart_greedy", "return_entropy": True},
               {"decode_type": "multistart_greedy", "calc_reward": False}):
        a, b = run(plain, env, td, **kw), run(fast, env, td, **kw)
        assert_same(a, b)
        if kw.get("return_entropy"):
            torch.testing.assert_close(a["entropy"], b["entropy"])


def test_rl4co_trainer_trains_the_fast_policy_like_the_plain_one():
    """Two POMO steps through rl4co's MatNet module and RL4COTrainer: the same weights after."""
    from rl4co.models import MatNet
    from rl4co.utils.trainer import RL4COTrainer

    weights = []
    for fast in (False, True):
        torch.manual_seed(0)
        policy = build_policy("matnet", ho=VARIANTS["ho_matnet"], fast=fast, **TINY)
        assert isinstance(policy, FastMatNetPolicy) == fast
        env = make_env("tsp", N)
        model = MatNet(env, policy=policy, batch_size=4, train_data_size=8, val_data_size=4,
                       optimizer="SGD", optimizer_kwargs={"lr": 0.1})  # Adam would turn float noise in ~0 gradients into +-lr steps
        trainer = RL4COTrainer(accelerator="cpu", devices=1, max_steps=2, precision="32-true", matmul_precision="highest",
                               logger=False, enable_checkpointing=False,
                               enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
        torch.manual_seed(1)
        trainer.fit(model)
        assert trainer.global_step == 2
        weights.append(policy.state_dict())
    assert weights[0].keys() == weights[1].keys()  # checkpoints are interchangeable
    for name, w in weights[0].items():
        torch.testing.assert_close(weights[1][name], w, rtol=1e-4, atol=1e-6, msg=name)
    torch.manual_seed(0)
    start = build_policy("matnet", ho=VARIANTS["ho_matnet"], **TINY).state_dict()
    assert sum(not torch.equal(start[k], weights[1][k]) for k in start) > 10  # training did move them


def test_config_switch_and_eval_decode(tmp_path):
    from hydra.utils import instantiate

    from ho_co.routing.decode import decode_batch
    from ho_co.routing.train import compose

    cfg = compose(["experiment=smoke"])
    assert cfg.model.policy.fast is True  # ho-co's MatNet uses the lean loop by default
    policy = instantiate(cfg.model.policy)
    assert isinstance(policy, FastMatNetPolicy)
    assert any(isinstance(m, HOLinear) for m in policy.modules())
    plain = instantiate(compose(["experiment=smoke", "model.policy.fast=false"]).model.policy)
    assert not isinstance(plain, FastMatNetPolicy)
    plain.load_state_dict(policy.state_dict())
    env, td = instances("tsp", batch=3)
    torch.manual_seed(4)
    tours_fast = decode_batch(policy, env, td.clone())
    torch.manual_seed(4)
    tours_plain = decode_batch(plain, env, td.clone())
    assert torch.equal(tours_fast, tours_plain)
    with pytest.raises(ValueError, match="'atsp' env"):
        build_policy("am", embed_dim=16, num_encoder_layers=1, num_heads=2, fast=True)


def test_the_step_traces_whole_for_torch_compile():
    """What `compile=True` hands to torch.compile on CUDA: one graph, the same log-probabilities."""
    _, fast = pair("matnet")
    _env, td = instances("tsp")
    with torch.no_grad():
        row, col = fast.encoder(td)[0]
        first = torch.arange(N).expand(B, N)
        tables = step_tables(fast.decoder, row, col, first)
        mask = torch.ones(B, N, N, dtype=torch.bool).scatter(-1, first.unsqueeze(-1), False)
        current = (first + 1) % N
        mask = mask.scatter(-1, current.unsqueeze(-1), False)
        args = (tables, first, current, additive_mask(mask, row.dtype), None, None, fast.decoder.pointer.sdpa_fn,
                True, 10.0, 1.0)
        eager = pointer_step(*args)
        torch._dynamo.reset()
        compiled = torch.compile(pointer_step, backend="aot_eager", fullgraph=True)(*args)
    torch.testing.assert_close(compiled, eager)
    assert torch.isinf(eager[mask.logical_not()]).all() and torch.isfinite(eager[mask]).all()


def test_the_encoder_traces_whole_for_torch_compile():
    """HO-MatNet's encoder (HOLinear's autograd.Function inside) is one graph for torch.compile."""
    torch.manual_seed(0)
    policy = build_policy("matnet", ho=VARIANTS["ho_matnet"], **{**TINY, "num_encoder_layers": 1})
    _env, td = instances("tsp")
    torch.manual_seed(3)
    eager = policy.encoder(td)[0]
    torch._dynamo.reset()
    torch.manual_seed(3)
    compiled = torch.compile(policy.encoder, backend="aot_eager", fullgraph=True)(td)[0]
    for x, y in zip(compiled, eager):
        torch.testing.assert_close(x, y)


def test_compile_modes_are_checked_and_cpu_stays_eager():
    plain, _ = pair("matnet")
    fast = make_fast(copy.deepcopy(plain), "reduce-overhead")
    assert fast.compile == "reduce-overhead"
    env, td = instances("tsp")
    a = run(plain, env, td, decode_type="multistart_greedy")
    b = run(fast, env, td, decode_type="multistart_greedy")
    assert_same(a, b)
    assert fast._compiled == {}  # nothing compiled for a CPU batch
    with pytest.raises(ValueError, match="torch.compile mode"):
        make_fast(plain, "fastest")
    fast._compiled["step"] = lambda: None  # what a CUDA run holds: not picklable
    clone = pickle.loads(pickle.dumps(fast))  # Lightning pickles the policy with its hparams
    assert clone._compiled == {} and clone.compile == "reduce-overhead" and "step" in fast._compiled


def test_bf16_autocast_decodes_valid_tours():
    _, fast = pair("ho_matnet")
    env, td = instances("tsp")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run(fast, env, td, phase="train", decode_type="multistart_sampling")
    assert torch.equal(out["actions"].sort(-1).values, torch.arange(N).expand(N * B, N))
    tours = out["actions"]
    cost = td["cost_matrix"].repeat(N, 1, 1)  # row s * B + b holds instance b
    rows = cost.gather(1, tours.unsqueeze(-1).expand(-1, -1, N))  # rows[i, t] = cost[i, tours[i, t], :]
    length = rows.gather(2, tours.roll(-1, 1).unsqueeze(-1)).sum((1, 2))
    torch.testing.assert_close(out["reward"], -length)
    assert out["log_likelihood"].requires_grad and torch.isfinite(out["log_likelihood"]).all()


def test_bad_policies_are_refused_with_the_reason():
    plain, _ = pair("matnet")
    with pytest.raises(TypeError, match="AutoregressivePolicy"):
        make_fast(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="'atsp' env"):
        FastMatNetPolicy(plain.encoder, plain.decoder, env_name="tsp")
    other_context = AttentionModelDecoder(embed_dim=16, num_heads=2, env_name="cvrp")  # VRPContext
    with pytest.raises(TypeError, match="got StaticEmbedding, VRPContext"):
        FastMatNetPolicy(plain.encoder, other_context, env_name="atsp")


def test_another_rl4co_version_is_refused(monkeypatch):
    """The lean loop reproduces rl4co 0.7.0's internals; any other version fails at once, saying so."""
    plain, _ = pair("matnet")
    monkeypatch.setattr(rl4co, "__version__", "0.8.0")
    with pytest.raises(RuntimeError, match=r"rl4co 0\.7\.0's MatNet .* rl4co 0\.8\.0 is installed.*fast=false"):
        make_fast(plain)
