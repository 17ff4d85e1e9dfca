"""Tour arithmetic shared by the solvers, the evaluator and the fast training loop.

Lengths are always recomputed from the instance's cost matrix: a solver's own objective value
may be rounded or scaled (Concorde, LKH and OR-Tools work on integers), and a policy's reward is
measured on a normalised copy, so neither is used as the length of a tour.
"""

from __future__ import annotations

import numpy as np


def tour_lengths(cost_matrix, tours):
    """Lengths [B, ...] of closed tours [B, ..., N] (the last node returns to the first) on
    ``cost_matrix`` [B, N, N] (entry [i, j] is the cost of going from i to j, so ATSP direction
    is respected).

    numpy in, float64 out (checked: integer tours of the matrix's B and N); torch tensors stay
    on their device and dtype, without a copy of the matrix per start ([B, S, N] tours).
    """
    is_torch = hasattr(tours, "gather")
    if not is_torch:
        tours, cost_matrix = _as_int_array(tours), np.asarray(cost_matrix)
        if cost_matrix.ndim != 3 or tours.shape[0] != cost_matrix.shape[0] or tours.shape[-1] != cost_matrix.shape[1]:
            raise ValueError(f"tours {list(tours.shape)} do not match cost_matrix {list(cost_matrix.shape)}")
    nxt = tours.roll(-1, -1) if is_torch else np.roll(tours, -1, -1)
    edges = (tours * tours.shape[-1] + nxt).reshape(tours.shape[0], -1)  # flat index of (from, to)
    flat = cost_matrix.reshape(cost_matrix.shape[0], -1)
    if is_torch:
        return flat.gather(1, edges).view(tours.shape).sum(-1)
    return np.take_along_axis(flat, edges, 1).astype(np.float64).reshape(tours.shape).sum(-1)


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
    if tours.ndim < 2 or tours.shape[-1] < 1:
        raise ValueError(f"tours must have shape [B, N], got {list(tours.shape)}")
    if not np.issubdtype(tours.dtype, np.integer):
        raise ValueError(f"tours must be integers, got dtype {tours.dtype}")
    return tours.astype(np.int64, copy=False)
