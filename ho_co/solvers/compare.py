"""Several solvers on the same instances, side by side: the loop behind the baseline tables
(`baselines/run_baselines.py`) and the solver benchmark (`benchmarks/references.py`).

Rows and tables are returned, never printed (the scripts print them); a solver skipped because
it is not installed is a warning on this module's logger.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ho_co.problems.instances import Instances
from ho_co.problems.tours import mean_gap
from ho_co.solvers.driver import solve_instances
from ho_co.solvers.registry import SolverUnavailable

log = logging.getLogger(__name__)


def compare_solvers(instances: Instances, solvers, out_dir, *, workers: int = 1, time_limits=None,
                    skip_unavailable: bool = False, progress: bool = True) -> list[dict]:
    """One row per solver: mean length, gap to the first solver's tours, proven-optimal count
    and wall seconds. Tours go to ``out_dir/<solver>.npz`` (`ho-co solve`'s file, also its
    cache); ``time_limits`` maps a solver to its seconds per instance."""
    rows, ref = [], None
    for solver in solvers:
        limit = (time_limits or {}).get(solver)
        t0 = time.perf_counter()
        try:
            refs = solve_instances(solver, instances, out=Path(out_dir) / f"{solver}.npz", workers=workers,
                                   time_limit=limit, progress=progress)
        except SolverUnavailable as err:
            if not skip_unavailable:
                raise
            log.warning("skipping %s: %s", solver, err)
            continue
        seconds = time.perf_counter() - t0
        ref = refs.lengths if ref is None else ref
        rows.append({"solver": solver + (f" (GLS {limit:g} s)" if limit else ""), "seconds": seconds,
                     "ms_per_instance": 1000 * seconds / len(instances),
                     "mean_length": float(refs.lengths.mean()), "gap_percent": mean_gap(refs.lengths, ref),
                     "proven_optimal": f"{int(refs.optimal.sum())}/{len(instances)}"})
    return rows


def format_rows(rows: list[dict], columns: dict[str, str]) -> str:
    """A Markdown table of ``rows`` with ``columns`` ({key: header}): gaps with 3 decimals, mean
    lengths with 5, other numbers with 2."""
    def cell(key, value):
        if not isinstance(value, float):
            return str(value)
        if key == "gap_percent":
            return f"{round(value, 3) + 0.0:.3f}"
        return f"{value:.5f}" if key == "mean_length" else f"{value:.2f}"
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(k, r[k]) for k in columns) + " |" for r in rows]
    return "\n".join(lines)
