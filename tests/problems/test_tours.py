"""Tour lengths, tour checks and the gap, on numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

import torch

from ho_co.problems import check_tours, distance_matrix, gaps, mean_gap, tour_lengths

SQUARE = np.array([[[0, 0], [1, 0], [1, 1], [0, 1]]], dtype=np.float32)


def test_lengths_of_closed_tours_on_distances_and_matrices():
    square = distance_matrix(SQUARE)
    assert tour_lengths(square, [[0, 1, 2, 3]])[0] == pytest.approx(4.0)
    assert tour_lengths(square, [[0, 2, 1, 3]])[0] == pytest.approx(2 + 2 * np.sqrt(2))
    cost = np.array([[[0, 1, 10], [10, 0, 2], [3, 10, 0]]], dtype=np.float32)
    out = tour_lengths(cost, np.array([[0, 1, 2]]))
    assert out.dtype == np.float64 and out[0] == 6.0  # 0->1->2->0
    assert tour_lengths(cost, np.array([[0, 2, 1]]))[0] == 30.0  # direction counts


def test_torch_lengths_per_start_equal_numpy():
    cost = np.random.default_rng(0).random((3, 6, 6))
    tours = np.stack([np.stack([np.random.default_rng(b * 4 + s).permutation(6) for s in range(4)])
                      for b in range(3)])  # [B, S, N]
    got = tour_lengths(torch.as_tensor(cost), torch.as_tensor(tours))
    assert isinstance(got, torch.Tensor) and got.shape == (3, 4)
    for s in range(4):
        np.testing.assert_allclose(got[:, s].numpy(), tour_lengths(cost, tours[:, s]), rtol=1e-12)


def test_distance_matrix_numpy_and_torch_agree():
    locs = np.random.default_rng(1).random((2, 5, 2))
    d = distance_matrix(locs)
    assert d[1, 2, 4] == pytest.approx(np.linalg.norm(locs[1, 2] - locs[1, 4]))
    assert np.all(np.diagonal(d, axis1=1, axis2=2) == 0) and np.allclose(d, d.transpose(0, 2, 1))
    np.testing.assert_allclose(distance_matrix(torch.as_tensor(locs)).numpy(), d, rtol=1e-12)


def test_lengths_reject_mismatched_input():
    square = distance_matrix(SQUARE)
    with pytest.raises(ValueError, match="do not match"):
        tour_lengths(square, [[0, 1, 2]])
    with pytest.raises(ValueError, match="integers"):
        tour_lengths(square, [[0.0, 1.0, 2.0, 3.0]])


def test_check_tours_names_first_bad_instance():
    check_tours(np.array([[0, 1, 2], [2, 0, 1]]), 3)
    with pytest.raises(ValueError, match="instance 1 is not a permutation: node 0 visited 2 times, node 2 never"):
        check_tours(np.array([[0, 1, 2], [0, 1, 0]]), 3)
    with pytest.raises(ValueError, match="instance 0 has node 5"):
        check_tours(np.array([[0, 1, 5]]), 3)
    with pytest.raises(ValueError, match="expected num_loc=4"):
        check_tours(np.array([[0, 1, 2]]), 4)


def test_gap_on_known_numbers():
    assert mean_gap([11.0, 20.0], [10.0, 20.0]) == pytest.approx(5.0)  # (10% + 0%) / 2
    np.testing.assert_allclose(gaps([3.0, 4.5], [3.0, 4.0]), [0.0, 12.5])


@pytest.mark.parametrize("lengths, refs, message", [
    ([1.0, np.nan], [1.0, 1.0], "lengths of instance 1 is NaN"),
    ([1.0, 1.0], [np.inf, 1.0], "reference lengths of instance 0"),
    ([1.0, 1.0], [1.0, 0.0], "instance 1 is not positive"),
    ([1.0], [1.0, 1.0], "same length"),
])
def test_gap_rejects_bad_numbers(lengths, refs, message):
    with pytest.raises(ValueError, match=message):
        mean_gap(lengths, refs)
