"""The shipped imitation pools: their Concorde tours are all proven optimal and belong to the
instances `ho-co make-data` draws from the pool's seed (the ATSP pools' instances do not ship)."""

from pathlib import Path

import numpy as np
import pytest

from ho_co.problems import Instances, generate_atsp, load_instances, load_references, tour_lengths

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.mark.parametrize("name, num_loc, size, seed", [("atsp20_pool", 20, 25600, 20261213),
                                                        ("atsp20_pool2", 20, 25600, 20261216),
                                                        ("atsp50_pool", 50, 6400, 20261212),
                                                        ("atsp50_pool2", 50, 6400, 20261215)])
def test_an_atsp_pool_tours_belong_to_the_instances_drawn_again_from_its_seed(name, num_loc, size, seed):
    inst = Instances("atsp", cost_matrix=generate_atsp(num_loc, size, seed=seed))
    refs = load_references(DATA / f"{name}_concorde.npz", inst)  # checks the instances' digest
    assert len(refs.tours) == size and refs.optimal.all()
    np.testing.assert_allclose(refs.lengths, tour_lengths(inst.cost_matrix.astype(np.float64), refs.tours), rtol=1e-5)


@pytest.mark.parametrize("name, size, mean", [("tsp50_pool", 6400, 5.692862), ("tsp50_pool2", 19200, 5.693919)])
def test_a_tsp50_pool_ships_with_its_optimal_tours(name, size, mean):
    inst = load_instances(DATA / f"{name}.npz", problem="tsp")
    refs = load_references(DATA / f"{name}_concorde.npz", inst)
    assert len(inst) == size and refs.optimal.all()
    assert refs.lengths.mean() == pytest.approx(mean, abs=1e-6)
