"""OR-Tools routing with guided local search (pip install ortools): the baseline used in the
learned-solver literature. Costs are integers (`solution.integer_costs`, largest entry at most ``SCALE``); guided local
search runs until ``time_limit`` (default ``DEFAULT_TIME_LIMIT`` seconds per instance).

Never import highspy in the same process: ortools 9.15 and highspy 1.15 clash. `solve_instances`
runs each solver in its own worker processes, which keeps them apart.
"""

from __future__ import annotations

import numpy as np

from ho_co.solvers.solution import Solution, integer_costs

SCALE = 1e6
DEFAULT_TIME_LIMIT = 1.0


def solve(cost_matrix, time_limit=None) -> Solution:
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

    ints = integer_costs(cost_matrix, SCALE).tolist()
    n = len(ints)
    manager = pywrapcp.RoutingIndexManager(n, 1, 0)
    routing = pywrapcp.RoutingModel(manager)
    cost = routing.RegisterTransitCallback(
        lambda a, b: ints[manager.IndexToNode(a)][manager.IndexToNode(b)])
    routing.SetArcCostEvaluatorOfAllVehicles(cost)
    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PATH_CHEAPEST_ARC
    params.local_search_metaheuristic = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    params.time_limit.FromMilliseconds(int(1000 * (time_limit or DEFAULT_TIME_LIMIT)))
    assignment = routing.SolveWithParameters(params)
    if assignment is None:
        raise RuntimeError("OR-Tools found no tour")
    tour, index = [], routing.Start(0)
    while not routing.IsEnd(index):
        tour.append(manager.IndexToNode(index))
        index = assignment.Value(routing.NextVar(index))
    return Solution(np.asarray(tour, dtype=np.int64), False, "ortools")
