"""Instance sets for routing problems: deterministic generators, `.npz` and TSPLIB in, validated.

Every path that feeds a learned policy or a reference solver goes through `load_instances`, so
a broken file fails here, once, with a message naming the file and the problem, instead of
producing a silently wrong gap later.

Conventions (shared with rl4co's own datasets):
- TSP: ``locs`` float [B, N, 2]; the cost matrix is the exact (float) Euclidean distance.
- ATSP: ``cost_matrix`` float [B, N, N] with a zero diagonal.
- TSPLIB files (`ho_co.problems.tsplib`): one instance each, its cost matrix in the file's own
  metric (EDGE_WEIGHT_TYPE), coordinates kept where the file has them in the plane.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

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


def generate_atsp(num_loc: int, size: int, seed: int) -> np.ndarray:
    """``size`` ATSP cost matrices float32 [B, N, N] from rl4co's generator (MatNet's tmat class:
    uniform [0, 1] costs closed under the triangle inequality, zero diagonal).

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


# --------------------------------------------------------------------------- files


def write_npz(path: str | os.PathLike, **arrays) -> Path:
    """Write ``arrays`` to ``path`` so the file appears whole or not at all (a temporary file
    renamed into place): an interrupted write never leaves a half file a later run would trust."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def save_instances(path: str | os.PathLike, *, locs=None, cost_matrix=None) -> Path:
    """Write instances to ``path`` (.npz): ``locs`` for TSP or ``cost_matrix`` for ATSP,
    validated first (the same rules as loading)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: instance files are written as .npz")
    if (locs is None) == (cost_matrix is None):
        raise ValueError(f"{path}: give exactly one of locs= (TSP) or cost_matrix= (ATSP)")
    key, arr = ("locs", locs) if locs is not None else ("cost_matrix", cost_matrix)
    arr = np.asarray(arr)
    validate(arr, key, f"{path} (save_instances)")
    return write_npz(path, **{key: arr})


def load_instances(
    path: str | os.PathLike, problem: str | None = None, num_loc: int | None = None
) -> Instances:
    """Read and validate an instance file: ``.npz`` (keys ``locs`` or ``cost_matrix``) or a
    TSPLIB ``.tsp``/``.atsp`` file (one instance, in the file's own metric).

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
    elif path.suffix.lower() in TSPLIB_SUFFIXES:
        from ho_co.problems.tsplib import read_tsplib

        inst = read_tsplib(path)
    else:
        raise ValueError(f"{path}: unknown instance format (use .npz, or TSPLIB .tsp/.atsp)")
    if problem is not None and inst.problem != problem:
        raise ValueError(f"{path}: holds {inst.problem.upper()} instances, expected {problem.upper()}")
    if num_loc is not None and inst.num_loc != int(num_loc):
        raise ValueError(f"{path}: instances have N={inst.num_loc} nodes, expected num_loc={num_loc}")
    return inst


TSPLIB_SUFFIXES = (".tsp", ".atsp", ".tsplib")


def instance_files(paths) -> list[Path]:
    """The instance files named by ``paths``: files as given, directories expanded to their
    TSPLIB and `.npz` files (sorted); a directory with none is an error."""
    files = []
    for p in map(Path, [paths] if isinstance(paths, (str, os.PathLike)) else paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir()
                           if f.is_file() and (f.suffix.lower() in TSPLIB_SUFFIXES or f.suffix == ".npz"))
            if not found:
                raise FileNotFoundError(f"{p}: directory holds no instance files (.tsp, .atsp, .npz)")
            files += found
        else:
            files.append(p)
    return files


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an `.npz` file; an empty, truncated or non-zip file is one ValueError
    naming it (numpy alone raises EOFError or BadZipFile for those)."""
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: not an .npz archive (the file is empty)")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not an .npz archive (no zip directory: cut short, or another format)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from err


def _load_npz(path: Path, problem: str | None) -> Instances:
    arrays = read_npz(path)
    if "locs" in arrays and "cost_matrix" in arrays:
        raise ValueError(f"{path}: holds both 'locs' and 'cost_matrix'; an instance file has one "
                         "(locs for TSP, cost_matrix for ATSP or a symmetric TSP matrix)")
    if "locs" in arrays:
        locs = arrays["locs"]
        validate(locs, "locs", str(path))
        return Instances("tsp", locs=locs)
    if "cost_matrix" in arrays:
        cost = arrays["cost_matrix"]
        validate(cost, "cost_matrix", str(path))
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
