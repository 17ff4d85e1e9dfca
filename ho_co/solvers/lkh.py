"""LKH-3 through ``elkai`` (pip install elkai): a strong heuristic baseline for TSP and ATSP.

LKH works on integer costs, so the matrix is scaled so its largest entry is ``SCALE`` and
rounded; the caller recomputes lengths in float. ``elkai`` runs LKH for a number of runs, not a
time budget, so ``time_limit`` does not apply.
"""

from __future__ import annotations

import numpy as np

from ho_co.solvers.tours import Solution

SCALE = 1e6
RUNS = 10  # elkai's default number of LKH runs


def solve(cost_matrix, locs=None, time_limit=None) -> Solution:
    import elkai

    c = _costs(cost_matrix, locs)
    ints = np.rint(c * (SCALE / max(float(c.max()), 1e-12))).astype(np.int64)
    tour = elkai.DistanceMatrix(ints.tolist()).solve_tsp(runs=RUNS)
    return Solution(np.asarray(tour[:-1], dtype=np.int64), False, "lkh")  # elkai repeats the start


def _costs(cost_matrix, locs) -> np.ndarray:
    if locs is not None:
        locs = np.asarray(locs, dtype=np.float64)
        return np.sqrt(((locs[:, None, :] - locs[None, :, :]) ** 2).sum(-1))
    return np.asarray(cost_matrix, dtype=np.float64)
