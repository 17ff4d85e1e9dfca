import numpy as np
import pytest
import torch
from tensordict import TensorDict

from ho_co.problems import Instances, distance_matrix, generate_atsp, generate_tsp, save_instances, tour_lengths
from ho_co.routing.envs import TSPMatrixEnv, instances_to_td, make_env


def test_tsp_matrix_env_keeps_coordinates_and_rewards_euclidean_length():
    env = make_env("tsp", 6)
    td = env.reset(batch_size=[4])
    assert td["locs"].shape == (4, 6, 2)
    torch.testing.assert_close(td["cost_matrix"], distance_matrix(td["locs"]), rtol=0, atol=0)
    assert torch.all(td["cost_matrix"].diagonal(dim1=1, dim2=2) == 0)
    tours = torch.stack([torch.randperm(6) for _ in range(4)])
    expected = tour_lengths(distance_matrix(td["locs"].double()).numpy(), tours.numpy())
    np.testing.assert_allclose(-env.get_reward(td, tours).numpy(), expected, rtol=1e-5)


def test_tsp_reset_sizes_the_mask_by_the_instances_and_keeps_their_points():
    """A file's N, not the generator's: the matrix comes from the points given, which stay."""
    env = make_env("tsp", 6)
    locs = torch.as_tensor(generate_tsp(9, 3, seed=1))
    out = env.reset(TensorDict({"locs": locs}, batch_size=[3]))
    assert out["action_mask"].shape == (3, 9) and out["action_mask"].all()
    torch.testing.assert_close(out["locs"], locs, rtol=0, atol=0)
    torch.testing.assert_close(out["cost_matrix"], distance_matrix(locs), rtol=0, atol=0)
    tours = torch.stack([torch.randperm(9) for _ in range(3)])
    np.testing.assert_allclose(-env.get_reward(out, tours).numpy(),
                               tour_lengths(distance_matrix(locs.double()).numpy(), tours.numpy()), rtol=1e-5)


def test_tsp_given_as_a_matrix_has_no_points_and_nothing_is_an_error():
    env = make_env("tsp", 6)
    cost = distance_matrix(torch.as_tensor(generate_tsp(7, 2, seed=2)))
    out = env.reset(TensorDict({"cost_matrix": cost}, batch_size=[2]))
    assert "locs" not in out.keys() and out["action_mask"].shape == (2, 7)
    torch.testing.assert_close(out["cost_matrix"], cost, rtol=0, atol=0)
    with pytest.raises(ValueError, match="'locs' or 'cost_matrix'"):
        env.reset(TensorDict({"other": torch.zeros(2, 7)}, batch_size=[2]))


def test_atsp_reset_keeps_the_file_matrix_and_sizes_the_mask_by_it():
    cost = torch.as_tensor(generate_atsp(8, 2, seed=4))
    out = make_env("atsp", 5).reset(TensorDict({"cost_matrix": cost}, batch_size=[2]))
    torch.testing.assert_close(out["cost_matrix"], cost, rtol=0, atol=0)
    assert out["action_mask"].shape == (2, 8) and out["action_mask"].all()


def test_instances_become_the_tensordict_reset_reads():
    locs = generate_tsp(5, 2, seed=0)
    td = instances_to_td(Instances("tsp", locs=locs))
    assert set(td.keys()) == {"locs"} and td.batch_size == torch.Size([2])
    np.testing.assert_array_equal(td["locs"].numpy(), locs)
    cost = generate_atsp(5, 3, seed=0)
    td = instances_to_td(Instances("atsp", cost_matrix=cost))
    assert set(td.keys()) == {"cost_matrix"} and td.batch_size == torch.Size([3])
    np.testing.assert_array_equal(td["cost_matrix"].numpy(), cost)


def test_val_file_loads_through_validated_loader(tmp_path, tsp_files):
    inst, _, _ = tsp_files
    env = TSPMatrixEnv(generator_params={"num_loc": 7}, val_file=str(inst))
    data = env.dataset(phase="val")
    assert len(data) == 12


def test_wrong_node_count_names_file(tsp_files):
    inst, _, _ = tsp_files
    env = TSPMatrixEnv(generator_params={"num_loc": 9}, val_file=str(inst))
    with pytest.raises(ValueError, match=r"tsp\.npz.*N=7.*num_loc=9"):
        env.dataset(phase="val")


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"cost_matrix": np.full((2, 5, 5), np.nan, np.float32)}, "NaN"),
        ({"cost_matrix": -np.ones((2, 5, 5), np.float32)}, "negative"),
        ({"cost_matrix": np.ones((2, 5, 4), np.float32)}, "shape"),
        ({"weights": np.ones((2, 5, 5), np.float32)}, "no 'locs'"),
    ],
)
def test_bad_instance_files_raise_clear_errors(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    env = make_env("atsp", 5, val_file=str(path))
    with pytest.raises(ValueError, match=message) as err:
        env.dataset(phase="val")
    assert "bad.npz" in str(err.value)


def test_tsp_file_is_refused_by_atsp_env(tmp_path):
    path = save_instances(tmp_path / "t.npz", locs=np.random.rand(2, 5, 2).astype(np.float32))
    with pytest.raises(ValueError, match="TSP"):
        make_env("atsp", 5, val_file=str(path)).dataset(phase="val")
