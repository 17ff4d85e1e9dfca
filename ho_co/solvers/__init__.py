"""Reference tours for routing instances: Concorde, an exact MIP, LKH-3, OR-Tools, heuristics.

Solver functions share one signature, ``f(cost_matrix [N, N], time_limit) -> Solution``: they
solve the matrix they are given (an instance's own metric; integer matrices such as TSPLIB's
exactly). `solve_instances` runs one over an `ho_co.problems.Instances` batch in worker
processes. Nothing here imports ``ho_co.routing`` or torch.
"""

from ho_co.solvers.driver import solve_instances
from ho_co.solvers.registry import SOLVERS, SolverUnavailable, default_optimal_solver, get_solver
from ho_co.solvers.solution import Solution

__all__ = ["SOLVERS", "Solution", "SolverUnavailable", "default_optimal_solver", "get_solver",
           "solve_instances"]
