"""Construction heuristics for the baseline tables: nearest neighbour and farthest insertion.

Both work on a cost matrix, so they serve TSP and ATSP alike (entry [i, j] is the cost i -> j).
"""

from __future__ import annotations

import numpy as np

from ho_co.solvers.solution import Solution


def nearest_neighbour(cost_matrix: np.ndarray, start: int = 0) -> np.ndarray:
    """Greedy tour from ``start``: always go to the cheapest unvisited node."""
    n = cost_matrix.shape[0]
    visited = np.zeros(n, dtype=bool)
    tour = np.empty(n, dtype=np.int64)
    tour[0], visited[start] = start, True
    for k in range(1, n):
        row = np.where(visited, np.inf, cost_matrix[tour[k - 1]])
        tour[k] = int(np.argmin(row))
        visited[tour[k]] = True
    return tour


def farthest_insertion(cost_matrix: np.ndarray) -> np.ndarray:
    """Start from the farthest pair, then repeatedly take the node farthest from the tour and
    insert it where it lengthens the tour least (Rosenkrantz, Stearns & Lewis, 1977)."""
    c = np.asarray(cost_matrix, dtype=np.float64)
    n = c.shape[0]
    sym = np.maximum(c, c.T)  # "distance to the tour" for ATSP: the larger of the two ways
    i, j = np.unravel_index(int(np.argmax(sym)), sym.shape)
    tour = [int(i), int(j)]
    in_tour = np.zeros(n, dtype=bool)
    in_tour[tour] = True
    dist = np.minimum(sym[i], sym[j])
    for _ in range(n - 2):
        k = int(np.argmax(np.where(in_tour, -np.inf, dist)))
        t = np.asarray(tour)
        nxt = np.roll(t, -1)
        pos = int(np.argmin(c[t, k] + c[k, nxt] - c[t, nxt]))
        tour.insert(pos + 1, k)
        in_tour[k] = True
        dist = np.minimum(dist, sym[k])
    return np.asarray(tour, dtype=np.int64)


def solve_nearest(cost_matrix, time_limit=None) -> Solution:
    return Solution(nearest_neighbour(np.asarray(cost_matrix, dtype=np.float64)), False, "nearest")


def solve_insertion(cost_matrix, time_limit=None) -> Solution:
    return Solution(farthest_insertion(cost_matrix), False, "insertion")
