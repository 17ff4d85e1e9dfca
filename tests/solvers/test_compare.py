"""The solver-table loop shared by the baseline tables and the solver benchmark."""

from __future__ import annotations

import logging

import pytest

from ho_co.problems import Instances, References, generate_tsp, mean_gap
from ho_co.solvers import SolverUnavailable, registry
from ho_co.solvers.compare import compare_solvers, format_rows

INST = Instances("tsp", locs=generate_tsp(9, 4, seed=7))


def test_rows_gap_to_the_first_solver_and_table(tmp_path):
    solvers = ["exact", "nearest", "insertion"]
    rows = compare_solvers(INST, solvers, tmp_path, workers=1, progress=False)
    assert [r["solver"] for r in rows] == solvers
    saved = {s: References.load(tmp_path / f"{s}.npz") for s in solvers}  # each solver's own file
    for row, solver in zip(rows, solvers):
        assert row["mean_length"] == pytest.approx(saved[solver].lengths.mean())
        assert row["gap_percent"] == pytest.approx(mean_gap(saved[solver].lengths, saved["exact"].lengths))
        assert row["ms_per_instance"] == pytest.approx(1000 * row["seconds"] / len(INST))
    assert rows[0]["gap_percent"] == 0 and rows[0]["proven_optimal"] == "4/4"
    assert all(r["gap_percent"] > -1e-9 and r["proven_optimal"] == "0/4" for r in rows[1:])  # none beats the optimum
    table = format_rows(rows, {"solver": "solver", "mean_length": "mean length", "gap_percent": "gap %",
                               "seconds": "s", "proven_optimal": "proven optimal"})
    lines = table.splitlines()
    assert lines[:2] == ["| solver | mean length | gap % | s | proven optimal |", "|---|---|---|---|---|"]
    assert lines[2] == f"| exact | {rows[0]['mean_length']:.5f} | 0.000 | {rows[0]['seconds']:.2f} | 4/4 |"
    assert len(lines) == 2 + len(rows)


def test_the_first_solver_is_the_reference_even_when_it_is_not_optimal(tmp_path):
    rows = compare_solvers(INST, ["nearest", "exact"], tmp_path, workers=1, progress=False)
    assert rows[0]["gap_percent"] == 0
    nearest, exact = (References.load(tmp_path / f"{s}.npz").lengths for s in ("nearest", "exact"))
    assert rows[1]["gap_percent"] == pytest.approx(mean_gap(exact, nearest)) and rows[1]["gap_percent"] <= 0


def test_a_missing_solver_is_logged_and_skipped_or_raised(tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setitem(registry.SOLVERS, "missing", registry.SolverSpec(
        "missing", "nowhere:solve", False, ("no_such_package_here",), "pip install it"))
    with caplog.at_level(logging.WARNING, logger="ho_co.solvers.compare"):
        rows = compare_solvers(INST, ["missing", "nearest"], tmp_path, skip_unavailable=True, progress=False)
    assert [r["solver"] for r in rows] == ["nearest"] and rows[0]["gap_percent"] == 0  # the next one leads
    assert "skipping missing" in caplog.text and "no_such_package_here" in caplog.text
    assert capsys.readouterr().out == ""  # the library logs; printing is the scripts'
    with pytest.raises(SolverUnavailable, match="no_such_package_here"):
        compare_solvers(INST, ["nearest", "missing"], tmp_path, progress=False)
