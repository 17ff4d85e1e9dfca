"""Tour arithmetic shared by the solvers and the learned-solver evaluator.

Lengths are always recomputed here, in float64, from the instance itself: a solver's own
objective value may be rounded (Concorde, LKH and OR-Tools work on integers), so it is never
used as the length of a tour.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Solution(NamedTuple):
    """One solver's answer for one instance (every solver function returns this)."""

    tour: np.ndarray  # int64 [N], a permutation of 0..N-1
    optimal: bool  # proven optimal by the solver
    method: str  # what produced the tour (e.g. 'exact' when Concorde fell back)


def tour_lengths(tours, cost_matrix=None, locs=None) -> np.ndarray:
    """Lengths float64 [B] of closed tours int [B, N] (the last node returns to the first).

    Give ``locs`` [B, N, 2] (Euclidean, computed in float64) or ``cost_matrix`` [B, N, N]
    (entry [i, j] is the cost of going from i to j, so ATSP direction is respected).
    """
    tours = _as_int_array(tours)
    if (cost_matrix is None) == (locs is None):
        raise ValueError("tour_lengths needs exactly one of cost_matrix= or locs=")
    nxt = np.roll(tours, -1, axis=1)
    if locs is not None:
        locs = np.asarray(locs, dtype=np.float64)
        _match(tours, locs.shape[:2], "locs")
        pts = np.take_along_axis(locs, tours[..., None], axis=1)
        nxt_pts = np.take_along_axis(locs, nxt[..., None], axis=1)
        return np.sqrt(((nxt_pts - pts) ** 2).sum(-1)).sum(-1)
    cost_matrix = np.asarray(cost_matrix)
    _match(tours, cost_matrix.shape[:2], "cost_matrix")
    rows = np.arange(tours.shape[0])[:, None]
    return cost_matrix[rows, tours, nxt].astype(np.float64).sum(-1)


def check_tours(tours, num_loc: int) -> None:
    """Raise ValueError naming the first instance whose tour is not a permutation of 0..N-1."""
    tours = _as_int_array(tours)
    if tours.shape[1] != num_loc:
        raise ValueError(f"tours visit {tours.shape[1]} nodes, expected num_loc={num_loc}")
    for b, tour in enumerate(tours):
        if tour.min() < 0 or tour.max() >= num_loc:
            bad = tour[(tour < 0) | (tour >= num_loc)][0]
            raise ValueError(f"tour of instance {b} has node {bad}, outside 0..{num_loc - 1}")
        counts = np.bincount(tour, minlength=num_loc)
        if (counts != 1).any():
            twice, missing = np.flatnonzero(counts > 1), np.flatnonzero(counts == 0)
            raise ValueError(f"tour of instance {b} is not a permutation: node {twice[0]} visited "
                             f"{counts[twice[0]]} times, node {missing[0]} never")


def gaps(lengths, ref_lengths) -> np.ndarray:
    """Per-instance optimality gaps in percent: 100 (L - L*) / L*."""
    lengths = np.asarray(lengths, dtype=np.float64)
    ref = np.asarray(ref_lengths, dtype=np.float64)
    if lengths.shape != ref.shape or lengths.ndim != 1:
        raise ValueError(f"lengths {list(lengths.shape)} and reference lengths {list(ref.shape)} "
                         "must be 1-D arrays of the same length")
    for name, arr in (("lengths", lengths), ("reference lengths", ref)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} of instance {np.flatnonzero(~np.isfinite(arr))[0]} is NaN or inf")
    if (ref <= 0).any():
        raise ValueError(f"reference length of instance {np.flatnonzero(ref <= 0)[0]} is not positive")
    return 100.0 * (lengths - ref) / ref


def mean_gap(lengths, ref_lengths) -> float:
    """Mean over instances of (L - L*) / L*, in percent (the number papers report)."""
    return float(gaps(lengths, ref_lengths).mean())


def _as_int_array(tours) -> np.ndarray:
    tours = np.asarray(tours)
    if tours.ndim != 2 or tours.shape[1] < 1:
        raise ValueError(f"tours must have shape [B, N], got {list(tours.shape)}")
    if not np.issubdtype(tours.dtype, np.integer):
        raise ValueError(f"tours must be integers, got dtype {tours.dtype}")
    return tours.astype(np.int64, copy=False)


def _match(tours: np.ndarray, shape, key: str) -> None:
    if tuple(tours.shape) != tuple(shape):
        raise ValueError(f"tours {list(tours.shape)} do not match {key} [B, N] = {list(shape)}")
