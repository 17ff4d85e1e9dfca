"""TSPLIB files in their own metric: problems (.tsp/.atsp), optimal tours (.opt.tour), optima lists.

A published TSPLIB optimum holds only in its file's metric: EUC_2D rounds each distance to the
nearest integer, CEIL_2D up, ATT is the pseudo-Euclidean distance, GEO the distance on an
idealised sphere, and so on. The cost matrix is therefore built from tsplib95's own weight
function for the file (every EDGE_WEIGHT_TYPE it defines, EXPLICIT in every EDGE_WEIGHT_FORMAT),
never re-derived from the coordinates, and a solver given that matrix returns the published
optimum. Coordinates in the plane (NODE_COORD_SECTION of a 2-D type, or DISPLAY_DATA_SECTION)
are kept for drawing only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ho_co.problems.instances import Instances, validate
from ho_co.problems.tours import check_tours

PLANAR_TYPES = ("EUC_2D", "CEIL_2D", "ATT", "GEO", "MAN_2D", "MAX_2D")
ID_SECTIONS = ("NODE_COORD_SECTION", "DISPLAY_DATA_SECTION")  # one line per node, id first
# numbers in an EDGE_WEIGHT_SECTION per format, for DIMENSION n
_FORMAT_COUNT = {
    "FULL_MATRIX": lambda n: n * n,
    **{f: lambda n: n * (n - 1) // 2 for f in ("UPPER_ROW", "LOWER_ROW", "UPPER_COL", "LOWER_COL")},
    **{f: lambda n: n * (n + 1) // 2
       for f in ("UPPER_DIAG_ROW", "LOWER_DIAG_ROW", "UPPER_DIAG_COL", "LOWER_DIAG_COL")},
}


def read_tsplib(path: str | os.PathLike) -> Instances:
    """One TSP or ATSP instance (B = 1) with its cost matrix in the file's metric (zero diagonal).

    Errors name the file and the problem: an unknown or unsupported EDGE_WEIGHT_TYPE, a missing
    section, a DIMENSION that disagrees with the data, an asymmetric matrix in a TSP file.
    """
    path = Path(path)
    prob = _load(path)
    _check_unique_ids(path)
    kind, wtype = (prob.type or "").upper(), (prob.edge_weight_type or "").upper()
    if kind not in ("TSP", "ATSP"):
        raise ValueError(f"{path}: TSPLIB TYPE {kind or 'missing'} is not TSP or ATSP")
    n = int(prob.dimension or 0)
    if n < 3:
        raise ValueError(f"{path}: DIMENSION {prob.dimension or 'missing'}; at least 3 nodes needed")
    if wtype == "EXPLICIT":
        _check_explicit(path, prob, n)
    elif not wtype:
        raise ValueError(f"{path}: EDGE_WEIGHT_TYPE missing")
    else:
        _check_coords(path, prob.node_coords, n, f"EDGE_WEIGHT_TYPE {wtype} needs a NODE_COORD_SECTION")
    nodes = list(prob.get_nodes())
    cost = np.array([[0 if i == j else prob.get_weight(i, j) for j in nodes] for i in nodes])
    cost = cost.astype(np.int64 if np.issubdtype(cost.dtype, np.integer) else np.float64)[None]
    validate(cost, "cost_matrix", str(path))
    if kind == "TSP" and not np.array_equal(cost, cost.transpose(0, 2, 1)):
        i, j = np.argwhere(cost[0] != cost[0].T)[0]
        raise ValueError(f"{path}: TYPE TSP but the weights are not symmetric "
                         f"(node {i + 1} -> {j + 1} costs {cost[0, i, j]}, back {cost[0, j, i]})")
    return Instances(kind.lower(), locs=_planar_coords(path, prob, wtype, nodes, kind), cost_matrix=cost,
                     name=path.stem, edge_weight_type=wtype)


def read_opt_tour(path: str | os.PathLike, num_loc: int) -> np.ndarray:
    """The tour int64 [N] (0-based) of a TSPLIB ``.opt.tour`` file, checked to be a permutation."""
    path = Path(path)
    prob = _load(path)
    if not prob.tours:
        raise ValueError(f"{path}: no TOUR_SECTION")
    tour = np.asarray(prob.tours[0], dtype=np.int64) - 1
    try:
        check_tours(tour[None], num_loc)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return tour


def read_optima(path: str | os.PathLike) -> dict[str, float]:
    """``{name: length}`` from lines ``name: length`` (the layout of TSPLIB's published optima
    lists); ``#`` starts a comment. A malformed line is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such optima file")
    optima = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([^\s:]+)\s*:\s*([0-9.eE+-]+)", line)
        try:
            value = float(m.group(2)) if m else None
        except ValueError:
            value = None
        if value is None or not value > 0:
            raise ValueError(f"{path}:{number}: expected 'name: length' with a positive length, got {line!r}")
        optima[m.group(1)] = value
    return optima


def _load(path: Path):
    try:
        import tsplib95
    except ImportError as err:
        raise ValueError(f"{path}: reading TSPLIB files needs tsplib95: pip install tsplib95") from err
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such TSPLIB file")
    try:
        return tsplib95.load(path)
    except KeyError as err:  # tsplib95 looks the type / format up in its tables
        raise ValueError(f"{path}: EDGE_WEIGHT_TYPE or EDGE_WEIGHT_FORMAT {err.args[0]!r} is not one "
                         "TSPLIB defines") from err
    except Exception as err:  # tsplib95 raises many kinds of parse errors
        raise ValueError(f"{path}: not a readable TSPLIB file ({type(err).__name__}: {err})") from err


def _check_unique_ids(path: Path) -> None:
    """tsplib95 keeps the last of two lines with one node id, silently: a repeat is refused."""
    section, seen = None, set()
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        words = line.replace(":", " ").split()
        if not words:
            continue
        try:
            node = int(words[0])
        except ValueError:  # a keyword: a section starts or ends
            section, seen = (words[0].upper() if words[0].upper() in ID_SECTIONS else None), set()
            continue
        if section and node in seen:
            raise ValueError(f"{path}:{number}: node {node} is listed twice in {section}")
        seen.add(node)


def _check_explicit(path: Path, prob, n: int) -> None:
    fmt = (prob.edge_weight_format or "").upper()
    if fmt not in _FORMAT_COUNT:
        raise ValueError(f"{path}: EXPLICIT weights need an EDGE_WEIGHT_FORMAT of "
                         f"{', '.join(_FORMAT_COUNT)}; got {fmt or 'none'}")
    count = sum(len(row) for row in prob.edge_weights or [])
    if count == 0:
        raise ValueError(f"{path}: EDGE_WEIGHT_TYPE EXPLICIT needs an EDGE_WEIGHT_SECTION")
    if count != _FORMAT_COUNT[fmt](n):
        raise ValueError(f"{path}: EDGE_WEIGHT_SECTION holds {count} numbers, but {fmt} for "
                         f"DIMENSION {n} needs {_FORMAT_COUNT[fmt](n)}")


def _check_coords(path: Path, coords: dict, n: int, missing: str) -> None:
    if not coords:
        raise ValueError(f"{path}: {missing}")
    if len(coords) != n or sorted(coords) != list(range(1, n + 1)):
        raise ValueError(f"{path}: DIMENSION is {n}, but the coordinate section lists {len(coords)} "
                         f"nodes numbered {min(coords)}..{max(coords)}")


def _planar_coords(path: Path, prob, wtype: str, nodes: list, kind: str) -> np.ndarray | None:
    """[1, N, 2] coordinates for drawing (ATSP and 3-D files have none)."""
    if kind != "TSP":
        return None
    coords = prob.node_coords if wtype in PLANAR_TYPES else prob.display_data
    if not coords:
        return None
    _check_coords(path, coords, len(nodes), "")
    locs = np.array([coords[i] for i in sorted(coords)], dtype=np.float64)[None]
    return locs if locs.shape[-1] == 2 else None
