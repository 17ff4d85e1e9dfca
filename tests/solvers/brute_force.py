"""Brute-force optima for tiny instances: the ground truth the solvers are checked against
(a plain module, not a conftest: tests/routing has its own conftest)."""

from __future__ import annotations

import itertools

import numpy as np


def brute_force_length(cost: np.ndarray) -> float:
    n = cost.shape[0]
    perms = np.array([(0, *p) for p in itertools.permutations(range(1, n))])
    return float(cost[perms, np.roll(perms, -1, axis=1)].sum(1).min())


def euclidean(locs: np.ndarray) -> np.ndarray:
    locs = np.asarray(locs, dtype=np.float64)
    return np.sqrt(((locs[:, None, :] - locs[None, :, :]) ** 2).sum(-1))
