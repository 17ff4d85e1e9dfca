"""Exact TSP/ATSP by mixed-integer programming with HiGHS (pip install highspy): the fallback
that proves optimality when Concorde is missing or fails, and the cross-check for Concorde.

Dantzig-Fulkerson-Johnson formulation, subtour constraints added lazily: solve the degree-
constrained problem, and while the solution splits into several cycles, forbid each cycle's node
set S from closing on itself (sum of x inside S <= |S| - 1) and solve again. TSP uses one
variable per edge (degree 2 at each node), ATSP one per arc (one arc in, one arc out).

Costs stay floats (no rounding), and HiGHS runs with a zero relative gap, so "optimal" means
optimal up to HiGHS's feasibility tolerance (1e-9 absolute gap here). Do not import OR-Tools in
the same process: ortools 9.15 and highspy 1.15 ship clashing HiGHS symbols.
"""

from __future__ import annotations

import time

import numpy as np

from ho_co.solvers.solution import Solution


def solve(cost_matrix, time_limit: float | None = None) -> Solution:
    """A proven-optimal tour of one instance."""
    c = np.asarray(cost_matrix, dtype=np.float64)
    symmetric = np.array_equal(c, c.T)
    tour = _solve_dfj(c, symmetric, time_limit)
    if tour is None:  # time limit hit before one tour was proven: a heuristic tour, not optimal
        from ho_co.solvers.heuristics import farthest_insertion

        return Solution(farthest_insertion(c), False, "exact")
    return Solution(tour, True, "exact")


def _solve_dfj(c: np.ndarray, symmetric: bool, time_limit: float | None) -> np.ndarray | None:
    import highspy

    n = c.shape[0]
    if symmetric:
        rows, cols = np.triu_indices(n, k=1)
    else:
        rows, cols = np.nonzero(~np.eye(n, dtype=bool))
    h = highspy.Highs()
    for name, value in (("output_flag", False), ("mip_rel_gap", 0.0), ("mip_abs_gap", 1e-9),
                        ("threads", 1), ("random_seed", 0)):
        h.setOptionValue(name, value)
    m = len(rows)
    h.addCols(m, c[rows, cols], np.zeros(m), np.ones(m), 0, np.zeros(0, np.int32),
              np.zeros(0, np.int32), np.zeros(0))
    # degree rows: TSP, each node on two edges; ATSP, one arc out of and one into each node
    groups = [np.flatnonzero((rows == i) | (cols == i)) for i in range(n)] if symmetric else \
        [np.flatnonzero(rows == i) for i in range(n)] + [np.flatnonzero(cols == i) for i in range(n)]
    rhs = 2.0 if symmetric else 1.0
    _add_rows(h, groups, np.full(len(groups), rhs), np.full(len(groups), rhs))

    deadline = None if time_limit is None else time.monotonic() + float(time_limit)
    integer = highspy.HighsVarType.kInteger
    index = np.arange(m, dtype=np.int32)
    # Phase 1 (cheap): the LP relaxation, cutting off every node set whose fractional cut is
    # below 2 (minimum cuts). Phase 2: the MIP, cutting off the subtours of integer solutions;
    # after phase 1 it usually needs one or two rounds.
    h.changeColsIntegrality(m, index, np.full(m, highspy.HighsVarType.kContinuous))
    phase_lp = True
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            h.setOptionValue("time_limit", left)
        h.run()
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        x = np.asarray(h.getSolution().col_value)
        if phase_lp:
            w = np.zeros((n, n))
            w[rows, cols] = x
            parts = _violated_cuts(w + w.T, threshold=2.0 - 1e-6)
            if not parts:
                phase_lp = False
                h.changeColsIntegrality(m, index, np.full(m, integer))
                continue
        else:
            chosen = x > 0.5
            parts = _cycles(n, rows[chosen], cols[chosen], symmetric)
            if len(parts) == 1:
                return parts[0]
        inside = [np.flatnonzero(np.isin(rows, s) & np.isin(cols, s)) for s in parts]
        _add_rows(h, inside, np.full(len(parts), -np.inf),
                  np.array([len(s) - 1.0 for s in parts]))
        if not phase_lp:  # back to the cheap LP rounds before the next MIP
            phase_lp = True
            h.changeColsIntegrality(m, index, np.full(m, highspy.HighsVarType.kContinuous))


def _violated_cuts(w: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Node sets S whose cut weight w(S, V \\ S) is below ``threshold``, from the phases of
    Stoer & Wagner's minimum-cut algorithm (the global minimum cut is among them).

    For TSP, w holds the edge values; for ATSP, x + x^T (which counts out- and in-flow, 2 each).
    """
    n = w.shape[0]
    w = w.copy()
    members = [[i] for i in range(n)]
    active = list(range(n))
    found: dict[tuple[int, ...], np.ndarray] = {}
    while len(active) > 1:
        # maximum-adjacency order; the last node's connectivity is the cut of the phase
        idx = np.asarray(active)
        conn = w[idx[0], idx].copy()
        added = np.zeros(len(idx), dtype=bool)
        added[0] = True
        prev, last = 0, 0
        for _ in range(len(idx) - 1):
            k = int(np.argmax(np.where(added, -np.inf, conn)))
            prev, last = last, k
            added[k] = True
            conn += w[idx[k], idx]
        cut_value = conn[last]  # weight between the last node and all the others
        side = np.asarray(sorted(members[idx[last]]), dtype=np.int64)
        if cut_value < threshold and 0 < len(side) < n:
            small = side if len(side) <= n // 2 else np.setdiff1d(np.arange(n), side)
            found[tuple(small.tolist())] = small
        # merge the last node into the one before it
        s, t = idx[prev], idx[last]
        w[s, :] += w[t, :]
        w[:, s] += w[:, t]
        w[s, s] = 0.0
        members[s] += members[t]
        active.remove(t)
    return list(found.values())


def _add_rows(h, groups, lower, upper) -> None:
    starts = np.cumsum([0] + [len(g) for g in groups[:-1]]).astype(np.int32)
    index = np.concatenate(groups).astype(np.int32)
    h.addRows(len(groups), lower, upper, len(index), starts, index, np.ones(len(index)))


def _cycles(n: int, heads: np.ndarray, tails: np.ndarray, symmetric: bool) -> list[np.ndarray]:
    """Split the chosen edges (each node on exactly two) or arcs into cycles, in visiting order."""
    succ = [[] for _ in range(n)]
    for a, b in zip(heads.tolist(), tails.tolist()):
        succ[a].append(b)
        if symmetric:
            succ[b].append(a)
    seen = np.zeros(n, dtype=bool)
    cycles = []
    for start in range(n):
        if seen[start]:
            continue
        cycle, prev, node = [start], -1, start
        seen[start] = True
        while True:
            nxt = succ[node][0] if succ[node][0] != prev or len(succ[node]) == 1 else succ[node][1]
            if not symmetric:
                nxt = succ[node][0]
            if nxt == start:
                break
            cycle.append(nxt)
            seen[nxt] = True
            prev, node = node, nxt
        cycles.append(np.asarray(cycle, dtype=np.int64))
    return cycles
