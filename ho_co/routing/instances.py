"""Instance files for routing problems: deterministic generators, `.npz` and TSPLIB in, validated.

Every path that feeds a model or a reference solver goes through `load_instances`, so a broken
file fails here, once, with a message naming the file and the problem, instead of producing a
silently wrong gap later.

Conventions (shared with rl4co's own datasets):
- TSP: ``locs`` float [B, N, 2]; the cost matrix is the exact (float) Euclidean distance.
- ATSP: ``cost_matrix`` float [B, N, N] with a zero diagonal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROBLEMS = ("tsp", "atsp")


@dataclass
class Instances:
    """A validated batch of instances of one problem and one size.

    For TSP, ``cost_matrix`` is filled from ``locs`` (float Euclidean distances, the dtype of
    ``locs``): [B, N, N] costs N/2 times the memory of ``locs`` (400 MB for 10,000 TSP-100).
    """

    problem: str
    locs: np.ndarray | None = None
    cost_matrix: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.problem not in PROBLEMS:
            raise ValueError(f"problem must be one of {PROBLEMS}, got {self.problem!r}")
        if self.locs is None and self.cost_matrix is None:
            raise ValueError(f"{self.problem.upper()} instances need locs or cost_matrix")
        if self.problem == "atsp" and self.locs is not None:
            raise ValueError("ATSP instances are given by cost_matrix only, not locs")
        if self.cost_matrix is None:
            self.cost_matrix = euclidean_matrix(self.locs)

    @property
    def num_loc(self) -> int:
        return int(self.cost_matrix.shape[1])

    def __len__(self) -> int:
        return int(self.cost_matrix.shape[0])


def euclidean_matrix(locs: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances [B, N, N] of ``locs`` [B, N, 2], in the dtype of ``locs``."""
    locs = np.asarray(locs)
    diff = locs[:, :, None, :] - locs[:, None, :, :]
    return np.sqrt((diff * diff).sum(-1))


# --------------------------------------------------------------------------- generators


def generate_tsp(num_loc: int, size: int, seed: int) -> np.ndarray:
    """``size`` TSP instances, ``num_loc`` cities uniform in the unit square, float32 [B, N, 2].

    Uses ``np.random.RandomState(seed).uniform(size=(size, num_loc, 2))``: the recipe of
    Kool et al.'s ``generate_data.py`` (which calls ``np.random.seed(seed)`` before each set),
    so ``generate_tsp(50, 10_000, 1234)`` regenerates their TSP-50 test set (as float32).
    """
    _check_size(num_loc, size)
    rng = np.random.RandomState(seed)
    return rng.uniform(size=(size, num_loc, 2)).astype(np.float32)


def generate_atsp(num_loc: int, size: int, seed: int) -> np.ndarray:
    """``size`` ATSP cost matrices float32 [B, N, N] from rl4co's generator (MatNet's tmat class:
    uniform [0, 1] costs closed under the triangle inequality, zero diagonal).

    The global torch RNG is forked, so calling this does not disturb a training run's seed.
    """
    _check_size(num_loc, size)
    import torch
    from rl4co.envs.routing.atsp.generator import ATSPGenerator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        td = ATSPGenerator(num_loc=num_loc, tmat_class=True)(size)
    return td["cost_matrix"].numpy().astype(np.float32)


def _check_size(num_loc: int, size: int) -> None:
    if int(num_loc) < 3:
        raise ValueError(f"num_loc must be at least 3, got {num_loc}")
    if int(size) < 1:
        raise ValueError(f"size must be at least 1, got {size}")


# --------------------------------------------------------------------------- files


def save_instances(path: str | os.PathLike, *, locs=None, cost_matrix=None) -> Path:
    """Write instances to ``path`` (.npz): ``locs`` for TSP or ``cost_matrix`` for ATSP.

    The arrays are validated first (same rules as loading), and the file appears atomically, so
    an interrupted write never leaves a half file that a later run would trust.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: instance files are written as .npz")
    if (locs is None) == (cost_matrix is None):
        raise ValueError(f"{path}: give exactly one of locs= (TSP) or cost_matrix= (ATSP)")
    key, arr = ("locs", locs) if locs is not None else ("cost_matrix", cost_matrix)
    arr = np.asarray(arr)
    _validate(arr, key, f"{path} (save_instances)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **{key: arr})
    os.replace(tmp, path)
    return path


def load_instances(
    path: str | os.PathLike, problem: str | None = None, num_loc: int | None = None
) -> Instances:
    """Read and validate an instance file: ``.npz`` (keys ``locs`` or ``cost_matrix``) or a
    TSPLIB ``.tsp``/``.atsp`` file (one instance; EUC_2D or EXPLICIT weights).

    ``problem`` and ``num_loc``, when given, must match the file: a mismatch is an error, not a
    conversion. A ``cost_matrix`` file is ATSP unless ``problem='tsp'`` is asked for, in which
    case the matrices must be symmetric.
    """
    path = Path(path)
    if problem is not None and problem not in PROBLEMS:
        raise ValueError(f"problem must be one of {PROBLEMS}, got {problem!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such instance file")
    if path.suffix == ".npz":
        inst = _load_npz(path, problem)
    elif path.suffix.lower() in (".tsp", ".atsp", ".tsplib"):
        inst = _load_tsplib(path)
    else:
        raise ValueError(f"{path}: unknown instance format (use .npz, or TSPLIB .tsp/.atsp)")
    if problem is not None and inst.problem != problem:
        raise ValueError(f"{path}: holds {inst.problem.upper()} instances, expected {problem.upper()}")
    if num_loc is not None and inst.num_loc != int(num_loc):
        raise ValueError(f"{path}: instances have N={inst.num_loc} nodes, expected num_loc={num_loc}")
    return inst


def _load_npz(path: Path, problem: str | None) -> Instances:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from err
    if "locs" in arrays:
        locs = arrays["locs"]
        _validate(locs, "locs", str(path))
        return Instances("tsp", locs=locs)
    if "cost_matrix" in arrays:
        cost = arrays["cost_matrix"]
        _validate(cost, "cost_matrix", str(path))
        if problem == "tsp":
            bad = np.flatnonzero(~np.isclose(cost, cost.transpose(0, 2, 1), rtol=1e-5, atol=1e-8)
                                 .all(axis=(1, 2)))
            if bad.size:
                raise ValueError(f"{path}: cost_matrix of instance {bad[0]} is not symmetric, "
                                 "so it is not a TSP instance")
            return Instances("tsp", cost_matrix=cost)
        return Instances("atsp", cost_matrix=cost)
    raise ValueError(f"{path}: no 'locs' (TSP) or 'cost_matrix' (ATSP) array; "
                     f"keys found: {sorted(arrays) or 'none'}")


def _load_tsplib(path: Path) -> Instances:
    try:
        import tsplib95
    except ImportError as err:
        raise ValueError(f"{path}: reading TSPLIB files needs tsplib95: pip install tsplib95") from err

    try:
        prob = tsplib95.load(path)
    except Exception as err:  # tsplib95 raises many kinds of parse errors
        raise ValueError(f"{path}: not a readable TSPLIB file ({type(err).__name__}: {err})") from err
    kind, wtype = (prob.type or "").upper(), (prob.edge_weight_type or "").upper()
    if kind not in ("TSP", "ATSP"):
        raise ValueError(f"{path}: TSPLIB TYPE {kind or 'missing'} is not TSP or ATSP")
    nodes = list(prob.get_nodes())
    if wtype == "EUC_2D" and kind == "TSP":
        # exact float distances, not TSPLIB's rounded ones: the same metric as generated sets.
        locs = np.array([prob.node_coords[n] for n in nodes], dtype=np.float64)[None]
        _validate(locs, "locs", str(path))
        return Instances("tsp", locs=locs)
    if wtype == "EXPLICIT":
        cost = np.array([[0.0 if i == j else prob.get_weight(i, j) for j in nodes] for i in nodes],
                        dtype=np.float64)[None]
        _validate(cost, "cost_matrix", str(path))
        return Instances(kind.lower(), cost_matrix=cost)
    raise ValueError(f"{path}: EDGE_WEIGHT_TYPE {wtype or 'missing'} for {kind} is not supported "
                     "(use EUC_2D for TSP, or EXPLICIT)")


def _validate(arr: np.ndarray, key: str, where: str) -> None:
    """Shape, dtype, finiteness and sign checks; the message names the first bad instance."""
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
