"""Instance sets for routing problems: the validated `Instances` record, deterministic generators.

Every array that feeds a learned policy or a reference solver passes `validate`, so a broken
instance fails once, with a message naming where it came from and the problem, instead of
producing a silently wrong gap later. Files are read and written by `ho_co.problems.files`.

Conventions (shared with rl4co's own datasets):
- TSP: ``locs`` float [B, N, 2]; the cost matrix is the exact (float) Euclidean distance.
- ATSP: ``cost_matrix`` float [B, N, N] with a zero diagonal.
- TSPLIB files (`ho_co.problems.tsplib`): one instance each, its cost matrix in the file's own
  metric (EDGE_WEIGHT_TYPE), coordinates kept where the file has them in the plane.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

PROBLEMS = ("tsp", "atsp")


@dataclass
class Instances:
    """A validated batch of instances of one problem and one size.

    ``cost_matrix`` is what every tour is measured on. For generated TSP it is filled from
    ``locs`` in float64 (exact Euclidean); [B, N, N] costs 4 N times the memory of float32
    ``locs`` (800 MB for 10,000 TSP-100). ``edge_weight_type`` is TSPLIB's name of the metric
    (None for `.npz` sets); ``name`` is a TSPLIB file's name without its suffix.
    """

    problem: str
    locs: np.ndarray | None = None
    cost_matrix: np.ndarray | None = None
    name: str | None = None
    edge_weight_type: str | None = None

    def __post_init__(self) -> None:
        if self.problem not in PROBLEMS:
            raise ValueError(f"problem must be one of {PROBLEMS}, got {self.problem!r}")
        if self.locs is None and self.cost_matrix is None:
            raise ValueError(f"{self.problem.upper()} instances need locs or cost_matrix")
        if self.problem == "atsp" and self.locs is not None:
            raise ValueError("ATSP instances are given by cost_matrix only, not locs")
        if self.cost_matrix is None:
            self.cost_matrix = distance_matrix(np.asarray(self.locs, dtype=np.float64))

    @property
    def num_loc(self) -> int:
        return int(self.cost_matrix.shape[1])

    def __len__(self) -> int:
        return int(self.cost_matrix.shape[0])

    @property
    def digest(self) -> str:
        """SHA-256 naming these instances: of ``locs`` where they define the costs, else of the
        cost matrix (TSPLIB's metrics, ATSP)."""
        if self.locs is not None and self.edge_weight_type is None:
            return array_digest("locs", self.locs)
        return array_digest("cost_matrix", self.cost_matrix)


def distance_matrix(locs):
    """Pairwise Euclidean distances [..., N, N] of points [..., N, 2], in their dtype.

    Works on numpy arrays and torch tensors alike (the env calls it on the batch's device), and
    gives exact zeros on the diagonal.
    """
    diff = locs[..., :, None, :] - locs[..., None, :, :]
    return (diff * diff).sum(-1) ** 0.5


def array_digest(key: str, arr) -> str:
    """SHA-256 of an instance array (key, dtype, shape and bytes)."""
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{key}|{arr.dtype.str}|{arr.shape}|".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- generators


def generate_tsp(num_loc: int, size: int, seed: int) -> np.ndarray:
    """``size`` TSP instances, ``num_loc`` cities uniform in the unit square, float32 [B, N, 2].

    Uses ``np.random.RandomState(seed).uniform(size=(size, num_loc, 2))``: the recipe of
    Kool et al.'s ``generate_data.py`` (which calls ``np.random.seed(seed)`` before each set),
    so ``generate_tsp(50, 10_000, 1234)`` regenerates their TSP-50 test set (as float32).
    """
    _check_set_shape(num_loc, size)
    rng = np.random.RandomState(seed)
    return rng.uniform(size=(size, num_loc, 2)).astype(np.float32)


MATNET_COST_SCALE = 10**6  # MatNet's ATSProblemDef: integer costs in [0, 10^6), divided by 10^6


def generate_atsp(num_loc: int, size: int, seed: int) -> np.ndarray:
    """``size`` ATSP cost matrices float32 [B, N, N] of MatNet's own class (its ``ATSProblemDef``):
    integer costs uniform in [0, 10^6), a zero diagonal, each cost replaced by its shortest-path
    distance until nothing changes (the triangle inequality holds), divided by 10^6.

    Every cost is a whole number of 10^-6 units, so an exact solver working on integers at that
    scale (Concorde) solves these instances exactly. Training draws the continuous version of the
    same class, rl4co's ``ATSPGenerator(tmat_class=True)`` (`generate_atsp_rl4co`);
    tests/problems check that the two agree in distribution.
    """
    _check_set_shape(num_loc, size)
    rng = np.random.default_rng(seed)
    cost = rng.integers(0, MATNET_COST_SCALE, size=(size, num_loc, num_loc), dtype=np.int64)
    return (shortest_path_closure(cost) / MATNET_COST_SCALE).astype(np.float32)


def shortest_path_closure(cost: np.ndarray) -> np.ndarray:
    """Each matrix of [B, N, N] with its diagonal zeroed and every cost replaced by the shortest
    path between its ends (Floyd-Warshall over the batch: the fixpoint MatNet's loop reaches)."""
    cost = np.array(cost, copy=True)
    n = cost.shape[-1]
    cost[:, np.arange(n), np.arange(n)] = 0
    for k in range(n):
        np.minimum(cost, cost[:, :, k : k + 1] + cost[:, k : k + 1, :], out=cost)
    return cost


def generate_atsp_rl4co(num_loc: int, size: int, seed: int) -> np.ndarray:
    """``size`` ATSP cost matrices float32 [B, N, N] from rl4co's generator (MatNet's tmat class
    with continuous uniform [0, 1] costs), the instances training draws.

    The global torch RNG is forked, so calling this does not disturb a training run's seed.
    """
    _check_set_shape(num_loc, size)
    import torch
    from rl4co.envs.routing.atsp.generator import ATSPGenerator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        td = ATSPGenerator(num_loc=num_loc, tmat_class=True)(size)
    return td["cost_matrix"].numpy().astype(np.float32)


def generation_bytes(problem: str, num_loc: int, size: int) -> int:
    """Peak memory of generating a set: TSP draws float64 points and keeps a float32 copy
    (24 bytes a node); ATSP holds about four float32 [B, N, N] matrices (16 bytes an entry)."""
    return int(size) * int(num_loc) * (24 if problem == "tsp" else 16 * int(num_loc))


def _check_set_shape(num_loc: int, size: int) -> None:
    if int(num_loc) < 3:
        raise ValueError(f"num_loc must be at least 3, got {num_loc}")
    if int(size) < 1:
        raise ValueError(f"size must be at least 1, got {size}")


def validate(arr: np.ndarray, key: str, where: str) -> None:
    """The shape, dtype, finiteness and sign checks every model and solver relies on; the
    message names ``where`` (a file, or the caller) and the first bad instance."""
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{where}: {key} must be a real numeric array, got dtype {arr.dtype}")
    if key == "locs":
        if arr.ndim != 3 or arr.shape[-1] != 2:
            raise ValueError(f"{where}: locs must have shape [B, N, 2], got {list(arr.shape)}")
    elif arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(f"{where}: cost_matrix must have shape [B, N, N], got {list(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{where}: {key} holds no instances (B = 0)")
    if arr.shape[1] < 3:
        raise ValueError(f"{where}: {key} has N={arr.shape[1]} nodes per instance; at least 3 needed")
    finite = np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1)
    if not finite.all():
        raise ValueError(f"{where}: {key} of instance {np.flatnonzero(~finite)[0]} has NaN or inf values")
    if key == "cost_matrix":
        neg = (arr < 0).reshape(arr.shape[0], -1).any(axis=1)
        if neg.any():
            b = np.flatnonzero(neg)[0]
            raise ValueError(f"{where}: cost_matrix of instance {b} has negative costs "
                             f"(min {arr[b].min():.6g})")
        # No tour uses the diagonal, but MatNet reads every entry: a non-zero diagonal would change
        # the policy's input and not the lengths, so it is refused rather than silently dropped.
        diagonal = np.diagonal(arr, axis1=1, axis2=2)
        off = (diagonal != 0).any(axis=1)
        if off.any():
            b = np.flatnonzero(off)[0]
            i = int(np.flatnonzero(diagonal[b])[0])
            raise ValueError(f"{where}: cost_matrix of instance {b} has a non-zero diagonal "
                             f"(entry [{i}, {i}] = {arr[b, i, i]:.6g}); instance files have a zero diagonal")
