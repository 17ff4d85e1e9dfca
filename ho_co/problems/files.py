"""Instance files in and out (`.npz` and TSPLIB, validated on the way), and the `.npz` reading
and writing that reference files (`references.py`) share.

Every path that feeds a learned policy or a reference solver goes through `load_instances`, so
a broken file fails here, once, with a message naming the file and the problem. This module sits
above both readers (`instances` for the record and its checks, `tsplib` for TSPLIB's format);
neither imports it.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ho_co.problems.instances import PROBLEMS, Instances, validate
from ho_co.problems.tsplib import read_tsplib


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
        inst = read_tsplib(path)
    else:
        raise ValueError(f"{path}: unknown instance format (use .npz, or TSPLIB .tsp/.atsp)")
    if problem is not None and inst.problem != problem:
        hint = (" (refused rather than read as symmetric matrices: save them as cost_matrix to run an "
                "ATSP model on them)" if inst.locs is not None and problem == "atsp" else "")
        raise ValueError(f"{path}: holds {inst.problem.upper()} instances, expected {problem.upper()}{hint}")
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
