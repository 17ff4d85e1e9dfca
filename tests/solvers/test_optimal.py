"""Concorde and the exact MIP against brute force and each other: TSP (small and N=50), ATSP
through Concorde's 2N-node transformation against the directed MIP, and Concorde's quietness."""

from __future__ import annotations

import contextlib
import ctypes
import os

import numpy as np
import pytest

from ho_co.problems.instances import distance_matrix, generate_atsp, generate_tsp
from ho_co.solvers import concorde, exact
from ho_co.solvers.quiet import silenced_in_tempdir
from ho_co.problems.tours import check_tours

from brute_force import brute_force_length


def _length(cost, tour):
    return float(cost[tour, np.roll(tour, -1)].sum())


@pytest.mark.parametrize("n", [3, 4, 5, 7, 8])
def test_tsp_small_matches_brute_force(n):
    for locs in generate_tsp(n, 3, seed=n).astype(np.float64):
        cost = distance_matrix(locs)
        best = brute_force_length(cost)
        for solve in (concorde.solve, exact.solve):
            sol = solve(cost)
            check_tours(sol.tour[None], n)
            assert sol.optimal
            assert _length(cost, sol.tour) == pytest.approx(best, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("n", [3, 5, 8])
def test_atsp_small_matches_brute_force(n):
    for cost in generate_atsp(n, 3, seed=n).astype(np.float64):
        best = brute_force_length(cost)
        for solve in (concorde.solve, exact.solve):
            sol = solve(cost)
            assert sol.optimal
            assert _length(cost, sol.tour) == pytest.approx(best, rel=1e-6)


def test_concorde_and_exact_agree_on_tsp():
    sets = [generate_tsp(12, 4, seed=0), generate_tsp(50, 2, seed=1)]
    for batch in sets:
        for locs in batch.astype(np.float64):
            cost = distance_matrix(locs)
            a, b = concorde.solve(cost), exact.solve(cost)
            assert a.method == "concorde" and a.optimal and b.optimal
            # Concorde is optimal on the matrix scaled to 1e7 and rounded per edge
            assert _length(cost, a.tour) == pytest.approx(_length(cost, b.tour), rel=1e-6)


def test_atsp_transformation_agrees_with_directed_mip():
    costs = [*generate_atsp(12, 3, seed=0).astype(np.float64), generate_atsp(50, 1, seed=1)[0].astype(np.float64)]
    for cost in costs:
        a, b = concorde.solve(cost), exact.solve(cost)
        assert a.method == "concorde" and a.optimal and b.optimal
        assert _length(cost, a.tour) == pytest.approx(_length(cost, b.tour), rel=1e-5)


def test_symmetric_explicit_matrix_uses_concorde():
    locs = generate_tsp(10, 1, seed=4)[0].astype(np.float64)
    cost = distance_matrix(locs)
    a = concorde.solve(cost)  # EXPLICIT matrix, not the ATSP transformation
    assert a.method == "concorde"
    assert _length(cost, a.tour) == pytest.approx(brute_force_length(cost), rel=1e-6)


def test_atsp_tour_read_back_in_either_direction():
    n = 4
    forward = np.array([2, 6, 0, 4, 3, 7, 1, 5])  # 2 -> 0 -> 3 -> 1, each node then its copy
    np.testing.assert_array_equal(concorde.symmetric_tour_to_atsp(forward, n), [2, 0, 3, 1])
    np.testing.assert_array_equal(concorde.symmetric_tour_to_atsp(forward[::-1], n), [1, 2, 0, 3])
    with pytest.raises(concorde.ConcordeFailed):
        concorde.symmetric_tour_to_atsp(np.array([0, 1, 4, 5, 2, 6, 3, 7]), n)


def test_concorde_failure_falls_back_to_exact(monkeypatch):
    def broken(*args):
        raise concorde.ConcordeFailed("no tour")

    monkeypatch.setattr(concorde, "_run", broken)
    locs = generate_tsp(7, 1, seed=2)[0].astype(np.float64)
    sol = concorde.solve(distance_matrix(locs))
    assert sol.method == "exact" and sol.optimal
    assert _length(distance_matrix(locs), sol.tour) == pytest.approx(brute_force_length(distance_matrix(locs)))


def test_concorde_is_silent_and_leaves_no_files(capfd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    locs = generate_tsp(30, 1, seed=3)[0].astype(np.float64)
    seen = []
    real = silenced_in_tempdir

    @contextlib.contextmanager
    def spy():
        with real() as (workdir, captured):
            yield workdir, captured
        seen.append(captured.text)

    monkeypatch.setattr(concorde, "silenced_in_tempdir", spy)
    concorde.solve(distance_matrix(locs))
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    assert "Optimal" in seen[0]  # Concorde did talk; it went to the log, not the terminal
    assert list(tmp_path.iterdir()) == [] and os.getcwd() == str(tmp_path)


def test_silencing_catches_buffered_c_output(capfd):
    libc = ctypes.CDLL(None)
    with silenced_in_tempdir() as (workdir, captured):
        libc.printf(b"from C, no newline")  # sits in C's stdio buffer until flushed
        os.write(2, b"to fd 2\n")
        (workdir / "scratch.txt").write_text("x")
    out = capfd.readouterr()
    assert out.out == "" and out.err == ""
    assert "from C, no newline" in captured.text and "to fd 2" in captured.text
    assert not workdir.exists()


def test_exact_time_limit_returns_valid_unproven_tour():
    locs = generate_tsp(60, 1, seed=9)[0].astype(np.float64)
    sol = exact.solve(distance_matrix(locs), time_limit=1e-4)
    check_tours(sol.tour[None], 60)
    assert not sol.optimal
