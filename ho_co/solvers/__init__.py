"""Reference tours for routing instances: Concorde, an exact MIP, LKH-3, OR-Tools, heuristics.

Solver functions share one signature, ``f(cost_matrix [N, N], locs [N, 2] | None, time_limit)
-> tours.Solution``; `solve_instances` runs one over a batch in worker processes. Nothing here
imports ``ho_co.routing``: callers load instances and hand over arrays.
"""

from ho_co.solvers.driver import References, solve_instances
from ho_co.solvers.registry import SOLVERS, SolverUnavailable, default_optimal_solver, get_solver
from ho_co.solvers.tours import Solution, check_tours, gaps, mean_gap, tour_lengths

__all__ = [
    "References", "SOLVERS", "Solution", "SolverUnavailable", "check_tours",
    "default_optimal_solver", "gaps", "get_solver", "mean_gap", "solve_instances", "tour_lengths",
]
