"""The cost profile that says how far an ATSP instance is from the training class."""

import numpy as np
import pytest

from ho_co.problems.instances import generate_atsp
from ho_co.problems.profile import cost_profile, mean_profile, profile_table


def test_the_training_class_has_no_shortcuts_and_a_known_spread():
    profile = mean_profile(generate_atsp(20, 30, seed=3))
    assert profile.shortcuts == 0.0 and profile.zeros == 0.0
    assert 0.4 < profile.spread < 0.6 and 0.2 < profile.asymmetry < 0.4


def test_a_hand_matrix_gives_its_own_numbers():
    # 0 -> 2 costs 5, but 0 -> 1 -> 2 costs 2: one shortcut among the 6 costs; 1 -> 0 is free
    cost = np.array([[0, 1, 5], [0, 0, 1], [1, 1, 0]], dtype=float)
    profile = cost_profile(cost)
    assert profile.shortcuts == pytest.approx(1 / 6) and profile.zeros == pytest.approx(1 / 6)
    assert profile.asymmetry == pytest.approx((1 + 4 + 0) / ((1 + 0) + (5 + 1) + (1 + 1)))
    symmetric = cost_profile(cost + cost.T)
    assert symmetric.asymmetry == 0.0


def test_the_diagonal_is_ignored():
    cost = generate_atsp(10, 1, seed=0)[0].astype(float)
    big_diagonal = cost + np.diag(np.full(10, 1e8))
    assert cost_profile(big_diagonal) == cost_profile(cost)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((3, 4)), "square matrix"),
    (np.zeros((1, 1)), "square matrix"),
    (np.array([[0, np.nan], [1, 0]]), "finite costs"),
    (np.zeros((3, 3)), "positive mean"),
])
def test_bad_matrices_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        cost_profile(bad)


def test_the_table_has_the_generator_first_and_each_file(tmp_path):
    from ho_co.problems import save_instances

    path = save_instances(tmp_path / "a.npz", cost_matrix=generate_atsp(8, 2, seed=1))
    lines = profile_table([str(path)], [8], draws=4).splitlines()
    assert lines[2].startswith("| generate_atsp (4 drawn) | 8 |") and lines[3].startswith(f"| {path} | 8 |")
    assert len(lines) == 4
