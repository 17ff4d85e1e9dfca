"""Imitation of reference tours (ho_co.routing.imitation): the teacher-forced log-likelihood is
the policy's own, every start copy follows the tour from its start node, training on a pool
raises the tours' likelihood, its checkpoints start POMO runs, and a bad pool is one line."""

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from brute_force import brute_force_reference, brute_force_tours
from ho_co.cli import main
from ho_co.problems import References, generate_atsp, generate_tsp, load_instances, save_instances, tour_lengths
from ho_co.routing.envs import make_env
from ho_co.routing.imitation import ImitationMatNet, read_pool, rotations
from ho_co.routing.policies import build_policy
from ho_co.routing.train import compose, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/routing/conftest.py

N, SIZE = 8, 16
TINY = {"embed_dim": 16, "num_encoder_layers": 1, "num_heads": 2, "feedforward_hidden": 32}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """16 TSP-8 instances and their optimal tours, as `ho-co make-data` and `ho-co solve` write them."""
    d = tmp_path_factory.mktemp("pool")
    inst = save_instances(d / "pool.npz", locs=generate_tsp(N, SIZE, seed=5))
    brute_force_reference(d / "pool_ref.npz", load_instances(inst))
    return inst, d / "pool_ref.npz"


def imitation(pool, fast=True, seed=0):
    inst, ref = pool
    torch.manual_seed(seed)
    env = make_env("tsp", N)
    model = ImitationMatNet(env, build_policy("matnet", fast=fast, **TINY), pool=str(inst),
                            pool_reference=str(ref), batch_size=8)
    return model, env


def pool_batch(model):
    """The whole pool as one reset batch and its reference tours."""
    data = model.pool.data
    return model.env.reset(data.exclude("tours")), data["tours"]


def test_rotations_read_each_tour_from_the_given_node():
    tours = torch.tensor([[2, 0, 3, 1], [0, 1, 2, 3]])
    starts = torch.tensor([[1, 0], [3, 2]])  # [R, B]
    assert rotations(tours, starts).tolist() == [[[1, 2, 0, 3], [0, 1, 2, 3]], [[3, 1, 2, 0], [2, 3, 0, 1]]]


def test_copy_s_starts_at_node_s_and_follows_the_tour_both_ways(pool):
    model, env = imitation(pool)
    td, tours = pool_batch(model)
    teacher = model.teacher_tours(td, tours)  # [2N, B, N]
    assert teacher.shape == (2 * N, SIZE, N)
    assert (teacher[..., 0] == torch.arange(2 * N).unsqueeze(1) % N).all()  # copy s (each direction) starts at s
    assert torch.equal(teacher.sort(-1).values, torch.arange(N).expand_as(teacher))
    after = torch.empty_like(tours).scatter_(-1, tours, tours.roll(-1, -1))  # after[b, v]: the node after v
    before = torch.empty_like(tours).scatter_(-1, tours.roll(-1, -1), tours)  # before[b, v]: the node before v
    for rows, step in ((teacher[:N], after), (teacher[N:], before)):  # forward copies, then backward ones
        assert torch.equal(rows.roll(-1, -1), step.expand(N, -1, -1).gather(-1, rows))
    # the rows rl4co evaluates are these tours: its start nodes are the ones they were rotated to
    out = model.policy(td, env, actions=teacher[..., 1:].flatten(0, 1), num_starts=2 * N)
    assert torch.equal(out["actions"], teacher.flatten(0, 1))
    optimal = tour_lengths(load_instances(pool[0]).cost_matrix, tours.numpy())
    torch.testing.assert_close(-out["reward"], torch.as_tensor(optimal, dtype=torch.float32).repeat(2 * N))


@pytest.mark.parametrize("fast", [True, False])
def test_the_teacher_log_likelihood_is_the_sum_of_the_policys_step_log_probs(pool, fast):
    """Given the tours a greedy decode chose, teacher forcing scores them with that decode's own
    log-probabilities, step by step summed (copy 0 of each instance: the tour greedy built from
    node 0 is the reference read from node 0)."""
    model, env = imitation(pool, fast=fast)
    td, _ = pool_batch(model)
    torch.manual_seed(3)  # MatNet's one-hot draws: the same in both passes
    greedy = model.policy(td.clone(), env, phase="test", decode_type="multistart_greedy", num_starts=N,
                          return_sum_log_likelihood=False)
    from_zero = greedy["actions"][:SIZE]  # rows s * B + b: start 0
    steps = greedy["log_likelihood"][:SIZE]
    assert (steps[:, 1:-1] < 0).all()  # real choices, not forced ones
    torch.manual_seed(3)
    with torch.no_grad():
        teacher = model.teacher_log_likelihood(td.clone(), from_zero)  # [2, N, B]
    torch.testing.assert_close(teacher[0, 0], steps.sum(-1).detach(), rtol=1e-5, atol=1e-5)
    assert (teacher[1, 0] != teacher[0, 0]).all()  # the other direction is another sequence


def test_the_fast_engine_scores_every_start_as_rl4co_does(pool):
    (fast, env), (plain, _) = imitation(pool, fast=True), imitation(pool, fast=False)
    plain.policy.load_state_dict(fast.policy.state_dict())
    td, tours = pool_batch(fast)
    results = []
    for model in (fast, plain):
        torch.manual_seed(4)
        with torch.no_grad():
            results.append(model.teacher_log_likelihood(td.clone(), tours))
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-5)


def curve(run_dir):
    with open(Path(run_dir) / "learning_curve.csv", newline="") as f:
        return list(csv.DictReader(f))


def tiny_run(runs, name, experiment, pool, *extra):
    """`ho-co train experiment=...` at TSP-8 with a tiny network, validated on the pool's instances."""
    inst, ref = pool
    return train(compose([
        f"experiment={experiment}", f"paths.runs_dir={runs}", f"name={name}", f"env.generator_params.num_loc={N}",
        *(f"model.policy.{k}={v}" for k, v in TINY.items()), "model.batch_size=8", "model.val_batch_size=16",
        "model.train_data_size=16", "model.val_data_size=16", "trainer.log_every_n_steps=1",
        "+trainer.enable_model_summary=false", "callbacks.rich_progress_bar=null", "callbacks.summary=null",
        f"callbacks.learning_curve.instances={inst}", f"callbacks.learning_curve.reference={ref}",
        "callbacks.learning_curve.batch_size=16", *extra]))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, pool):
    """POMO for one epoch; imitation from it for three; POMO again from the imitation, with rl4co's
    own decoding loop (fast=false): the warm start of the probe, and the move between the engines."""
    inst, ref = pool
    d = tmp_path_factory.mktemp("runs")
    start = tiny_run(d, "start", "tsp50_cpu_matnet", pool, "trainer.max_epochs=1")
    imitated = tiny_run(d, "imitated", "tsp50_cpu_imitation", pool, "trainer.max_epochs=3", f"model.pool={inst}",
                        f"model.pool_reference={ref}", "model.optimizer_kwargs.lr=3e-3",
                        f"model.policy.init_from={start['last_checkpoint']}")
    pomo = tiny_run(d, "pomo", "tsp50_cpu_matnet", pool, "trainer.max_epochs=1", "model.policy.fast=false",
                    f"model.policy.init_from={imitated['last_checkpoint']}")
    return start, imitated, pomo


def policy_state(result):
    state = torch.load(result["last_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("policy.")}


def test_training_on_the_pool_raises_the_likelihood_of_its_tours(runs, pool):
    start, imitated, _ = runs
    assert imitated["global_step"] == 6  # 3 epochs of 16 instances at batch 8
    model, _ = imitation(pool)
    td, tours = pool_batch(model)
    nll = []
    for result in (start, imitated):
        model.policy.load_state_dict({k[len("policy."):]: v for k, v in policy_state(result).items()})
        torch.manual_seed(5)
        with torch.no_grad():
            nll.append(-torch.logsumexp(model.teacher_log_likelihood(td.clone(), tours), 0).mean().item())
    # nats per start copy: 8.4 at the start, 7.6 after six steps (choosing uniformly: log(7!/2) = 7.8)
    assert nll[1] < nll[0] - 0.3, nll


def test_an_imitation_checkpoint_starts_a_pomo_run(runs):
    start, imitated, pomo = runs
    keys = [sorted(policy_state(r)) for r in runs]
    assert keys[0] == keys[1] == keys[2] and len(keys[0]) > 10
    # the POMO run (rl4co's loop: fast=false) trained on from the imitation's weights and carries on its curve
    assert not all(torch.equal(a, b) for a, b in zip(policy_state(imitated).values(), policy_state(pomo).values()))
    assert len(curve(imitated["output_dir"])) == 4
    rows = curve(pomo["output_dir"])
    assert len(rows) == 1 + 3 + 1 and float(rows[-1]["cpu_s"]) > float(rows[-2]["cpu_s"]) > float(rows[0]["cpu_s"])
    assert [int(r["instances_seen"]) for r in rows] == [16, 32, 48, 64, 80]


def test_the_pool_is_read_again_every_epoch_in_a_new_order(pool, monkeypatch):
    model, _ = imitation(pool)
    model.train_batch_size = 4
    epoch = [0]
    monkeypatch.setattr(ImitationMatNet, "current_epoch", property(lambda self: epoch[0]))
    orders = []
    for epoch[0] in (0, 1, 0):
        orders.append(torch.cat([b["tours"] for b in model.train_dataloader()]))
    whole = sorted(map(tuple, model.pool.data["tours"].tolist()))
    assert all(sorted(map(tuple, order.tolist())) == whole for order in orders)  # every tour once an epoch
    assert torch.equal(orders[0], orders[2]) and not torch.equal(orders[0], orders[1])


def bad_pool(tmp_path, pool, mangle):
    inst, ref = pool
    refs = References.load(ref)
    mangle(refs)
    path = refs.save(tmp_path / "bad_ref.npz")
    return inst, path


@pytest.mark.parametrize("mangle, says", [
    (lambda r: r.__dict__.update(tours=r.tours[:10], lengths=r.lengths[:10]),
     "reference has tours [10, 8] and lengths [10], but the instance file has 16 instances of N=8"),
    (lambda r: r.tours.__setitem__((3, 1), r.tours[3, 2]),
     "tour of instance 3 is not a permutation"),
])
def test_a_pool_whose_tours_do_not_fit_its_instances_is_one_line_naming_the_file(tmp_path, pool, capsys, mangle,
                                                                                  says):
    inst, ref = bad_pool(tmp_path, pool, mangle)
    with pytest.raises(ValueError, match=f"^{re.escape(f'{ref}: {says}')}"):
        imitation((inst, ref))
    assert main(["train", "experiment=tsp50_cpu_imitation", f"paths.runs_dir={tmp_path}", "name=bad",
                 f"env.generator_params.num_loc={N}", f"model.pool={inst}", f"model.pool_reference={ref}",
                 "callbacks.rich_progress_bar=null", f"callbacks.learning_curve.instances={inst}",
                 "callbacks.learning_curve.reference=null"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"ho-co train: error: model: {ref}: ") and says in last
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_a_pool_of_other_instances_or_a_start_subset_is_refused(tmp_path, pool):
    inst, ref = pool
    other = save_instances(tmp_path / "other.npz", locs=generate_tsp(N, SIZE, seed=6))
    with pytest.raises(ValueError, match=f"^{re.escape(str(ref))}: reference tour of instance 0 .* belongs to other"):
        imitation((other, ref))
    with pytest.raises(ValueError, match="model.num_starts=3: imitation teaches the tour from every node"):
        ImitationMatNet(make_env("tsp", N), build_policy("matnet", **TINY), pool=str(inst), pool_reference=str(ref),
                        num_starts=3)


def test_a_pool_of_several_files_is_their_instances_in_order(tmp_path, pool):
    inst, ref = pool
    other = save_instances(tmp_path / "other.npz", locs=generate_tsp(N, 4, seed=6))
    brute_force_reference(tmp_path / "other_ref.npz", load_instances(other))
    env = make_env("tsp", N)
    one, two = read_pool(str(inst), str(ref), env), read_pool([inst, other], [ref, tmp_path / "other_ref.npz"], env)
    assert len(two) == SIZE + 4
    assert torch.equal(two.data["tours"][:SIZE], one.data["tours"])
    assert torch.equal(two.data["locs"][SIZE:], torch.as_tensor(load_instances(other).locs, dtype=torch.float32))
    with pytest.raises(ValueError, match="model.pool names 2 instance files but model.pool_reference 1 tour files"):
        read_pool([inst, other], [ref], env)


def test_a_transposed_half_is_shown_with_reversed_tours_still_optimal(tmp_path):
    """ATSP's free doubling: about half a batch is shown as (C^T, reversed tour), drawn again per
    batch and epoch, and every tour shown is optimal for the matrix shown with it."""
    n, size = 6, 32
    inst = save_instances(tmp_path / "atsp.npz", cost_matrix=generate_atsp(n, size, seed=7))
    optimal = brute_force_reference(tmp_path / "atsp_ref.npz", load_instances(inst))
    model = ImitationMatNet(make_env("atsp", n), build_policy("matnet", **TINY), pool=str(inst),
                            pool_reference=str(tmp_path / "atsp_ref.npz"), transpose=True)
    batch = model.pool.data
    before = batch.clone()
    shown = model.transposed_half(batch, batch_idx=0)
    cost, tours = shown["cost_matrix"].numpy(), shown["tours"].numpy()
    flipped = ~np.all(np.isclose(cost, batch["cost_matrix"].numpy()), axis=(1, 2))
    assert 0 < flipped.sum() < size
    np.testing.assert_allclose(cost[flipped], batch["cost_matrix"].numpy()[flipped].transpose(0, 2, 1))
    np.testing.assert_allclose(tour_lengths(cost, tours), optimal, rtol=1e-5)
    np.testing.assert_allclose(tour_lengths(cost, brute_force_tours(cost)), optimal, rtol=1e-5)
    assert torch.equal(model.transposed_half(batch, 0)["tours"], shown["tours"])
    assert not torch.equal(model.transposed_half(batch, 1)["tours"], shown["tours"])
    assert torch.equal(model.pool.data["tours"], before["tours"])  # the pool itself is untouched
    assert torch.equal(model.pool.data["cost_matrix"], before["cost_matrix"])


def test_transposing_a_tsp_pool_is_refused(pool):
    inst, ref = pool
    with pytest.raises(ValueError, match="model.transpose is for ATSP pools"):
        ImitationMatNet(make_env("tsp", N), build_policy("matnet", **TINY), pool=str(inst), pool_reference=str(ref),
                        transpose=True)
