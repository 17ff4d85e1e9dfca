"""Shared fixtures for the routing tests: tiny instance files, exact references, one trained
smoke checkpoint reused by the eval tests (training is the slow part)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ho_co.routing.instances import generate_atsp, generate_tsp, save_instances
from ho_co.solvers.tours import tour_lengths

N = 7  # brute force: 6! = 720 tours per instance


def brute_force_reference(path, cost_matrix: np.ndarray) -> np.ndarray:
    """Optimal tours by enumeration (node 0 first), written in `ho-co solve`'s format."""
    n = cost_matrix.shape[1]
    perms = np.array([(0, *p) for p in itertools.permutations(range(1, n))])
    best_tours, best = [], []
    for cm in cost_matrix:
        lengths = cm[perms, np.roll(perms, -1, axis=1)].sum(1)
        best_tours.append(perms[lengths.argmin()])
        best.append(lengths.min())
    tours = np.stack(best_tours)
    lengths = tour_lengths(tours, cost_matrix=cost_matrix)
    np.savez(path, tours=tours, lengths=lengths, optimal=np.ones(len(tours), bool), solver="brute-force")
    return lengths


@pytest.fixture(scope="session")
def tsp_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tsp")
    locs = generate_tsp(N, 12, seed=3)
    inst = save_instances(d / "tsp.npz", locs=locs)
    diff = locs[:, :, None] - locs[:, None]
    ref = brute_force_reference(d / "ref.npz", np.sqrt((diff.astype(np.float64) ** 2).sum(-1)))
    return inst, d / "ref.npz", ref


@pytest.fixture(scope="session")
def atsp_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("atsp")
    cost = generate_atsp(N, 6, seed=4)
    inst = save_instances(d / "atsp.npz", cost_matrix=cost)
    brute_force_reference(d / "ref.npz", cost.astype(np.float64))
    return inst, d / "ref.npz"


def smoke_overrides(runs_dir, name, *extra):
    return ["experiment=smoke", f"paths.runs_dir={runs_dir}", f"name={name}",
            f"env.generator_params.num_loc={N}", "callbacks.rich_progress_bar=null", *extra]


@pytest.fixture(scope="session")
def smoke():
    """Overrides of a smoke run: `smoke(runs_dir, name, *extra)`."""
    return smoke_overrides


@pytest.fixture(scope="session")
def tsp_run(tmp_path_factory, tsp_files):
    """One smoke HO-MatNet run on TSP-7 with the reference gap in validation."""
    from ho_co.routing.train import compose, train

    runs = tmp_path_factory.mktemp("runs")
    inst, ref, _ = tsp_files
    cfg = compose(smoke_overrides(runs, "tsp", f"callbacks.learning_curve.instances={inst}",
                                  f"callbacks.learning_curve.reference={ref}"))
    return train(cfg), runs


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: on a loaded 2-core box, thread hand-offs cost more than the work (~50x).
    A module asks for it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
