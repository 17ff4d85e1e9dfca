"""LKH-3 through ``elkai`` (pip install elkai): a strong heuristic baseline for TSP and ATSP.

LKH works on integer costs (`solution.integer_costs`: integer matrices as they are, float ones
scaled so the largest entry is ``SCALE``); the caller recomputes lengths in float. ``elkai``
runs LKH for a number of runs, not a time budget, so ``time_limit`` does not apply.
"""

from __future__ import annotations

import numpy as np

from ho_co.solvers.solution import Solution, integer_costs

SCALE = 1e6
RUNS = 10  # elkai's default number of LKH runs


def solve(cost_matrix, time_limit=None) -> Solution:
    import elkai

    ints = integer_costs(cost_matrix, SCALE)
    tour = elkai.DistanceMatrix(ints.tolist()).solve_tsp(runs=RUNS)
    return Solution(np.asarray(tour[:-1], dtype=np.int64), False, "lkh")  # elkai repeats the start
