"""The baseline table for one instance set: every reference solver, its mean length, its gap to
the proven optimum, how many tours are proven optimal, and the wall time.

Each solver's tours are kept in ``OUT_DIR/<solver>.npz`` (the `ho-co solve` format), so a rerun
only solves what changed or was interrupted; the table is printed and written to
``OUT_DIR/table.md``.

    python baselines/run_baselines.py --instances data/tsp50_test.npz --out-dir baselines/tsp50
    python baselines/run_baselines.py --instances data/atsp20.npz --out-dir baselines/atsp20 \\
        --solvers concorde lkh nearest insertion --workers 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ho_co.problems import load_instances
from ho_co.solvers import SOLVERS, default_optimal_solver
from ho_co.solvers.compare import compare_solvers, format_rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", required=True, help=".npz (locs or cost_matrix) or TSPLIB")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--solvers", nargs="+", default=["lkh", "ortools", "insertion", "nearest"],
                   choices=list(SOLVERS), help="compared against the optimal reference")
    p.add_argument("--reference", choices=("concorde", "exact"), help="default: concorde if installed")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--ortools-time-limit", type=float, default=1.0, help="GLS seconds per instance")
    args = p.parse_args()

    inst = load_instances(args.instances)
    out_dir = Path(args.out_dir)
    reference = args.reference or default_optimal_solver()
    rows = compare_solvers(inst, [reference] + [s for s in args.solvers if s != reference], out_dir,
                           workers=args.workers, time_limits={"ortools": args.ortools_time_limit})
    table = "\n".join([
        f"{inst.problem.upper()}-{inst.num_loc}, {len(inst)} instances from {args.instances}; "
        f"gap to {reference}; time with {args.workers} workers (0 when cached)", "",
        format_rows(rows, {"solver": "solver", "mean_length": "mean length", "gap_percent": "gap %",
                           "proven_optimal": "proven optimal", "seconds": "seconds"})])
    print(table)
    (out_dir / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
