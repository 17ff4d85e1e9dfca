"""Reference tours: the file `ho-co solve` writes (and `ho-co eval --out`), read back checked.

One `.npz` layout for every producer: ``tours`` int64 [B, N], ``lengths`` float64 [B] (in the
instances' own metric), ``optimal`` bool [B], ``method`` str [B], ``solver``,
``instances_hash`` and ``time_limit`` (NaN when none; the last two make the file a cache key).
A TSPLIB ``.opt.tour`` file reads as the same record (one proven-optimal tour).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ho_co.problems.files import read_npz, write_npz
from ho_co.problems.instances import Instances
from ho_co.problems.tours import check_tours, tour_lengths
from ho_co.problems.tsplib import read_opt_tour


@dataclass
class References:
    """Tours for a batch; ``optimal[b]`` says whether tour b was proven optimal."""

    tours: np.ndarray  # int64 [B, N]
    lengths: np.ndarray  # float64 [B]
    optimal: np.ndarray  # bool [B]
    method: np.ndarray  # str [B]: what produced each tour (e.g. 'exact' where Concorde fell back)
    solver: str
    instances_hash: str = ""
    time_limit: float = float("nan")

    def save(self, path: str | os.PathLike) -> Path:
        return write_npz(path, tours=self.tours, lengths=self.lengths, optimal=self.optimal,
                         method=np.asarray(self.method).astype(str), solver=np.str_(self.solver),
                         instances_hash=np.str_(self.instances_hash),
                         time_limit=np.float64(self.time_limit))

    @classmethod
    def load(cls, path: str | os.PathLike) -> References:
        """Read a references file (``tours`` and ``lengths`` required, the rest defaulted)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such reference file")
        arrays = read_npz(path)
        missing = {"tours", "lengths"} - set(arrays)
        if missing:
            raise ValueError(f"{path}: not a references file (lacks {sorted(missing)}; keys found: "
                             f"{sorted(arrays)})")
        size = len(arrays["lengths"])
        return cls(tours=arrays["tours"], lengths=arrays["lengths"].astype(np.float64),
                   optimal=arrays.get("optimal", np.zeros(size, bool)).astype(bool),
                   method=arrays.get("method", np.full(size, "unknown")),
                   solver=str(arrays.get("solver", "unknown")),
                   instances_hash=str(arrays.get("instances_hash", "")),
                   time_limit=float(arrays.get("time_limit", np.nan)))


def load_references(path: str | os.PathLike, instances: Instances) -> References:
    """Reference tours for ``instances``, checked to belong to them: right shape, permutations,
    and the tours re-measured on these instances give the file's lengths, so a mismatched pair
    fails instead of giving a wrong gap. A ``.opt.tour`` file gives its tour, measured here."""
    path = Path(path)
    if path.name.endswith(".tour"):
        if len(instances) != 1:
            raise ValueError(f"{path}: a TSPLIB tour is the reference of one instance, not {len(instances)}")
        tour = read_opt_tour(path, instances.num_loc)[None]
        return References(tour, tour_lengths(instances.cost_matrix, tour), np.ones(1, bool),
                          np.array(["tsplib"]), "tsplib")
    refs = References.load(path)
    tours, lengths = refs.tours, refs.lengths
    if lengths.shape != (len(instances),) or tours.shape != (len(instances), instances.num_loc):
        raise ValueError(
            f"{path}: reference has tours {list(tours.shape)} and lengths {list(lengths.shape)}, "
            f"but the instance file has {len(instances)} instances of N={instances.num_loc}"
        )
    try:
        check_tours(tours, instances.num_loc)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    measured = tour_lengths(instances.cost_matrix, tours)
    bad = np.flatnonzero(~np.isclose(measured, lengths, rtol=1e-4, atol=1e-6))
    if bad.size:
        b = bad[0]
        raise ValueError(
            f"{path}: reference tour of instance {b} has length {measured[b]:.6g} on these instances, "
            f"the file says {lengths[b]:.6g}: the reference belongs to other instances"
        )
    return refs
