import numpy as np
import pytest
import torch

from ho_co.problems import save_instances, tour_lengths
from ho_co.routing.envs import TSPMatrixEnv, make_env


def test_tsp_matrix_env_keeps_coordinates_and_rewards_euclidean_length():
    env = make_env("tsp", 6)
    td = env.reset(batch_size=[4])
    assert td["locs"].shape == (4, 6, 2)
    assert torch.allclose(td["cost_matrix"], torch.cdist(td["locs"], td["locs"]), atol=1e-6)
    assert torch.all(td["cost_matrix"].diagonal(dim1=1, dim2=2) == 0)
    tours = torch.stack([torch.randperm(6) for _ in range(4)])
    expected = tour_lengths(torch.cdist(td["locs"], td["locs"]).double().numpy(), tours.numpy())
    np.testing.assert_allclose(-env.get_reward(td, tours).numpy(), expected, rtol=1e-5)


def test_atsp_env_is_rl4co_tmat():
    td = make_env("atsp", 5).reset(batch_size=[3])
    cm = td["cost_matrix"]
    assert cm.shape == (3, 5, 5)
    # tmat class: the triangle inequality holds
    assert torch.all(cm[:, :, None, :] <= cm[:, :, :, None] + cm[:, None, :, :] + 1e-6)


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
