"""Tour lengths, tour checks and the gap, on numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from ho_co.solvers.tours import check_tours, gaps, mean_gap, tour_lengths

SQUARE = np.array([[[0, 0], [1, 0], [1, 1], [0, 1]]], dtype=np.float32)


def test_lengths_of_closed_tours_from_locs_and_matrix():
    assert tour_lengths([[0, 1, 2, 3]], locs=SQUARE)[0] == pytest.approx(4.0)
    assert tour_lengths([[0, 2, 1, 3]], locs=SQUARE)[0] == pytest.approx(2 + 2 * np.sqrt(2))
    cost = np.array([[[0, 1, 10], [10, 0, 2], [3, 10, 0]]], dtype=np.float32)
    out = tour_lengths(np.array([[0, 1, 2]]), cost_matrix=cost)
    assert out.dtype == np.float64 and out[0] == 6.0  # 0->1->2->0
    assert tour_lengths(np.array([[0, 2, 1]]), cost_matrix=cost)[0] == 30.0  # direction counts


def test_lengths_reject_mismatched_input():
    with pytest.raises(ValueError, match="exactly one"):
        tour_lengths([[0, 1, 2]])
    with pytest.raises(ValueError, match="do not match"):
        tour_lengths([[0, 1, 2]], locs=SQUARE)
    with pytest.raises(ValueError, match="integers"):
        tour_lengths([[0.0, 1.0, 2.0, 3.0]], locs=SQUARE)


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
