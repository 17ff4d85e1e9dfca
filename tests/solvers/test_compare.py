"""The solver-table loop shared by the baseline tables and the solver benchmark."""

from __future__ import annotations

import numpy as np

from ho_co.problems import Instances, generate_tsp
from ho_co.solvers.compare import compare_solvers, format_rows


def test_rows_gap_to_the_first_solver_and_table(tmp_path):
    inst = Instances("tsp", locs=generate_tsp(9, 4, seed=7))
    rows = compare_solvers(inst, ["exact", "nearest"], tmp_path, workers=1, progress=False)
    assert [r["solver"] for r in rows] == ["exact", "nearest"]
    assert rows[0]["gap_percent"] == 0 and rows[0]["proven_optimal"] == "4/4"
    assert rows[1]["gap_percent"] >= 0 and rows[1]["proven_optimal"] == "0/4"
    assert rows[1]["mean_length"] >= rows[0]["mean_length"]
    assert (tmp_path / "exact.npz").is_file() and (tmp_path / "nearest.npz").is_file()
    table = format_rows(rows, {"solver": "solver", "gap_percent": "gap %", "proven_optimal": "proven optimal"})
    assert table.splitlines()[:2] == ["| solver | gap % | proven optimal |", "|---|---|---|"]
    assert table.splitlines()[2] == "| exact | 0.000 | 4/4 |"
    assert np.isfinite(rows[1]["seconds"])
