"""Brute-force optima for tiny instances: the ground truth the solvers and the evaluator are
checked against (a plain module imported by tests/solvers and tests/routing)."""

from __future__ import annotations

import itertools

import numpy as np

from ho_co.problems import References


def brute_force_tours(cost_matrix: np.ndarray) -> np.ndarray:
    """An optimal tour [B, N] (node 0 first) of every matrix [B, N, N], by enumeration."""
    n = cost_matrix.shape[-1]
    perms = np.array([(0, *p) for p in itertools.permutations(range(1, n))])
    return np.stack([perms[cm[perms, np.roll(perms, -1, axis=1)].sum(1).argmin()] for cm in cost_matrix])


def brute_force_length(cost: np.ndarray) -> float:
    """The optimal tour length of one matrix [N, N]."""
    tour = brute_force_tours(cost[None])[0]
    return float(cost[tour, np.roll(tour, -1)].sum())


def brute_force_reference(path, instances) -> np.ndarray:
    """Optimal tours of ``instances`` written in `ho-co solve`'s format; returns their lengths."""
    from ho_co.problems import tour_lengths

    tours = brute_force_tours(instances.cost_matrix)
    lengths = tour_lengths(instances.cost_matrix, tours)
    References(tours, lengths, np.ones(len(tours), bool), np.full(len(tours), "brute-force"),
               "brute-force", instances.digest).save(path)
    return lengths
