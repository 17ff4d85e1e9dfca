"""What every solver function takes and returns: a cost matrix in, a `Solution` out.

Solvers that work on integers (Concorde, LKH, OR-Tools) get the matrix through `integer_costs`:
an integer matrix (TSPLIB's metrics) as it is, so its optimum is exact, and a float one scaled
and rounded.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Solution(NamedTuple):
    """One solver's answer for one instance."""

    tour: np.ndarray  # int64 [N], a permutation of 0..N-1
    optimal: bool  # proven optimal by the solver
    method: str  # what produced the tour (e.g. 'exact' when Concorde fell back)


def integer_costs(cost_matrix: np.ndarray, scale: float) -> np.ndarray:
    """int64 costs: the matrix itself when it holds integers no larger than ``scale``, else the
    matrix scaled so its largest entry is ``scale`` and rounded."""
    c = np.asarray(cost_matrix, dtype=np.float64)
    top = max(float(c.max()), 1e-12)
    if top <= scale and np.array_equal(c, np.rint(c)):
        return c.astype(np.int64)
    return np.rint(c * (scale / top)).astype(np.int64)
