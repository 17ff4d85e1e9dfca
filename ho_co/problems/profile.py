"""How far a cost matrix is from the ATSP instances the models train on, in four numbers.

A learned ATSP solver has seen one class only: MatNet's, uniform costs closed under shortest
paths (`generate_atsp`). A structured instance (a TSPLIB file) can differ in ways the mean-cost
scaling `ho-co eval` applies does not touch:

    spread      sd / mean of the off-diagonal costs (uniform costs after the closure: about 0.45-0.5)
    asymmetry   sum |c_ij - c_ji| / sum (c_ij + c_ji): 0 for a symmetric matrix
    shortcuts   share of costs above their shortest path through other nodes (0 in the training class)
    zeros       share of off-diagonal costs that are 0

`python -m ho_co.problems.profile FILE... [--num-loc N ...]` prints them as a Markdown table,
the generator's class at each N first.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ho_co.problems.instances import shortest_path_closure


class CostProfile(NamedTuple):
    spread: float
    asymmetry: float
    shortcuts: float
    zeros: float


def cost_profile(cost: np.ndarray) -> CostProfile:
    """The four numbers of one square matrix (its diagonal ignored)."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1] or cost.shape[0] < 2:
        raise ValueError(f"cost_profile needs one square matrix of N >= 2, got shape {cost.shape}")
    n = cost.shape[0]
    off = ~np.eye(n, dtype=bool)
    costs = cost[off]
    mean = costs.mean()
    if not np.isfinite(costs).all() or mean <= 0:
        raise ValueError("cost_profile needs finite costs with a positive mean")
    closed = shortest_path_closure(cost[None])[0]
    tolerance = 1e-6 * mean  # float rounding of sums, not a shortcut
    return CostProfile(
        spread=float(costs.std() / mean),
        asymmetry=float(np.abs(cost - cost.T)[off].sum() / (cost + cost.T)[off].sum()),
        shortcuts=float((costs > closed[off] + tolerance).mean()),
        zeros=float((costs == 0).mean()),
    )


def mean_profile(costs: np.ndarray) -> CostProfile:
    """The mean profile over a batch [B, N, N]."""
    return CostProfile(*np.mean([cost_profile(c) for c in costs], axis=0).tolist())


def profile_table(paths: list[str], num_locs: list[int], draws: int = 100, seed: int = 0) -> str:
    from ho_co.problems.files import load_instances
    from ho_co.problems.instances import generate_atsp

    lines = ["| instances | N | spread | asymmetry | shortcuts | zeros |", "|---|---:|---:|---:|---:|---:|"]

    def row(name: str, n: int, p: CostProfile) -> None:
        lines.append(f"| {name} | {n} | {p.spread:.2f} | {p.asymmetry:.2f} | {p.shortcuts:.1%} | {p.zeros:.1%} |")

    for n in num_locs:
        row(f"generate_atsp ({draws} drawn)", n, mean_profile(generate_atsp(n, draws, seed)))
    for path in paths:
        inst = load_instances(path)
        row(str(path), inst.num_loc, mean_profile(inst.cost_matrix))
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="cost matrices profiled against the ATSP training class")
    parser.add_argument("paths", nargs="*", help="instance files (.npz, TSPLIB)")
    parser.add_argument("--num-loc", type=int, nargs="*", default=[20, 50], help="the generator at these N")
    args = parser.parse_args()
    print(profile_table(args.paths, args.num_loc))
