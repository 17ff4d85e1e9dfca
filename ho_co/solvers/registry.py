"""Which reference solvers exist, what each needs installed, and a clear error when it is not.

Checking availability never imports a solver's heavy package (only `importlib.util.find_spec`),
so the parent process of `solve_instances` stays free of highspy/ortools/Concorde.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass


class SolverUnavailable(RuntimeError):
    """The solver's package is not installed; the message says what to install."""


@dataclass(frozen=True)
class SolverSpec:
    name: str
    target: str  # "module:function", called as f(cost_matrix [N, N], time_limit=None)
    proves_optimality: bool
    packages: tuple[str, ...]  # import names that must be findable
    install: str  # what to do when they are not

    def function(self):
        """The solver function ``target`` names (importing its module: the solver's package)."""
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def check_available(self) -> None:
        if self.name == "concorde":
            from ho_co.solvers import concorde

            if not concorde.available():
                raise SolverUnavailable(f"solver 'concorde': {concorde.INSTALL_HINT}")
            return
        missing = [p for p in self.packages if importlib.util.find_spec(p) is None]
        if missing:
            raise SolverUnavailable(f"solver {self.name!r} needs the Python package "
                                    f"{', '.join(missing)}: {self.install}")


SOLVERS = {
    s.name: s
    for s in (
        SolverSpec("concorde", "ho_co.solvers.concorde:solve", True, (), "see concorde.INSTALL_HINT"),
        SolverSpec("exact", "ho_co.solvers.exact:solve", True, ("highspy",), "pip install highspy"),
        SolverSpec("lkh", "ho_co.solvers.lkh:solve", False, ("elkai",), "pip install elkai"),
        SolverSpec("ortools", "ho_co.solvers.ortools:solve", False, ("ortools",), "pip install ortools"),
        SolverSpec("nearest", "ho_co.solvers.heuristics:solve_nearest", False, (), ""),
        SolverSpec("insertion", "ho_co.solvers.heuristics:solve_insertion", False, (), ""),
    )
}


def get_solver(name: str) -> SolverSpec:
    """The spec of solver ``name``, checked to be installed (SolverUnavailable if not)."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; choose from {', '.join(SOLVERS)}")
    spec = SOLVERS[name]
    spec.check_available()
    return spec


def default_optimal_solver() -> str:
    """'concorde' when a Concorde backend is installed, else 'exact' (HiGHS)."""
    from ho_co.solvers import concorde

    return "concorde" if concorde.available() else "exact"
