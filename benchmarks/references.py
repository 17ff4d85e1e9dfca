"""Reference solvers side by side on the same TSP-50 instances, then the 1280-set target.

Part 1: every solver on the same instances, one worker each, after the worker pool is warm:
ms per instance, mean length, gap to Concorde, how many tours were proven optimal, and time
relative to Concorde. Part 2: the whole 1280-instance TSP-50 set with the default optimal
solver on 2 workers (target: under 40 s on a 2-core machine), worker start-up included.
Results go to a temporary cache, so every run solves afresh.

    python benchmarks/references.py                  # 200 instances, all solvers, then 1280
    python benchmarks/references.py --quick          # 10 instances, 64 for part 2: cannot rot
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ho_co.problems import Instances, generate_tsp
from ho_co.solvers import SOLVERS, default_optimal_solver, solve_instances
from ho_co.solvers.compare import compare_solvers, format_rows


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-loc", type=int, default=50)
    p.add_argument("--size", type=int, default=200, help="instances for the side-by-side table")
    p.add_argument("--set-size", type=int, default=1280, help="instances for part 2")
    p.add_argument("--workers", type=int, default=2, help="workers for part 2")
    p.add_argument("--solvers", nargs="+", default=list(SOLVERS))
    p.add_argument("--ortools-time-limit", type=float, default=0.2, help="GLS seconds per instance")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--quick", action="store_true", help="10 instances, 64 for part 2")
    args = p.parse_args()
    if args.quick:
        args.size, args.set_size = 10, 64
    return args


def main() -> None:
    args = parse()
    inst = Instances("tsp", locs=generate_tsp(args.num_loc, args.size, args.seed))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # warm the worker pool's server process (it imports ho_co once) outside the timings
        solve_instances("nearest", Instances("tsp", locs=inst.locs[:2]), out=tmp / "warm.npz", progress=False)
        rows = compare_solvers(inst, args.solvers, tmp, workers=1, progress=False, skip_unavailable=True,
                               time_limits={"ortools": args.ortools_time_limit})
        for row in rows:
            row["x_time"] = row["ms_per_instance"] / rows[0]["ms_per_instance"]
        print(f"\nTSP-{args.num_loc}, {args.size} instances, 1 worker; gap to {rows[0]['solver']}")
        print(format_rows(rows, {"solver": "solver", "ms_per_instance": "ms / instance",
                                 "x_time": f"x {rows[0]['solver']} time", "mean_length": "mean length",
                                 "gap_percent": "gap %", "proven_optimal": "proven optimal"}))

        solver = default_optimal_solver()
        big = Instances("tsp", locs=generate_tsp(args.num_loc, args.set_size, args.seed + 1))
        t0 = time.perf_counter()
        refs = solve_instances(solver, big, out=tmp / "set.npz", workers=args.workers, progress=False)
        seconds = time.perf_counter() - t0
        print(f"\n{args.set_size} TSP-{args.num_loc} instances, {solver}, {args.workers} workers: "
              f"{seconds:.1f} s ({1000 * seconds / args.set_size:.1f} ms / instance), "
              f"{int(refs.optimal.sum())} proven optimal, mean length {refs.lengths.mean():.5f}")


if __name__ == "__main__":
    main()
