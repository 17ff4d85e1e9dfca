"""Where a command may write: checked before any work, so nothing a user types loses data.

`check_output` refuses a destination that is one of the command's inputs (always), a directory
where a file goes, a path below an existing file, or an existing file of another kind (unless
``overwrite``); a file of the same kind is replaced as before. `per_file_outputs` maps several
input files to ``OUT/NAME.npz`` and refuses two inputs that would share one. Nothing here
imports torch: checkpoints are recognised from their pickle's opcodes, never unpickled.
"""

from __future__ import annotations

import json
import os
import pickletools
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np

JSON_PEEK_BYTES = 64 * 2**20  # a larger .json is not read to find its kind


def check_output(dest, kind: str, *, inputs: Iterable = (), overwrite: bool = False,
                 option: str = "--out") -> Path:
    """``dest`` as a Path once it is safe to write ``kind`` there (see the module docstring);
    ``inputs`` are the files the command reads (None entries are skipped)."""
    dest = Path(dest)
    for source in inputs:
        if source is not None and _same_file(dest, Path(source)):
            raise ValueError(f"{option} {dest}: is one of the inputs ({source}); writing there would "
                             "destroy it, choose another path")
    _check_parents(dest, option)
    found = kind_of(dest)
    if found == "a directory":
        raise ValueError(f"{option} {dest}: is a directory; a file is expected here")
    if found is not None and found != kind and not overwrite:
        raise ValueError(f"{option} {dest}: holds {_describe(dest, found)}, not {_phrase(kind)}; "
                         "add --overwrite to replace it")
    return dest


def per_file_outputs(files: list, out, option: str = "--out") -> list[Path]:
    """Where each input's result goes: ``out`` for one file, ``out/NAME.npz`` for several (then
    ``out`` must be a directory, and two inputs named alike are refused, naming both)."""
    out = Path(out)
    if len(files) == 1:
        return [out]
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option} {out}: is a file, but {len(files)} instance files need a "
                         "directory (one NAME.npz each)")
    by_dest: dict[Path, Path] = {}
    for path in map(Path, files):
        dest = out / f"{path.stem}.npz"
        if dest in by_dest:
            raise ValueError(f"{by_dest[dest]} and {path} would both write {dest}; rename one or "
                             "run them separately")
        by_dest[dest] = path
    return list(by_dest)


def kind_of(path) -> str | None:
    """What an existing path holds: 'instances', 'reference tours', 'policy tours', 'training
    checkpoint', 'weights-only checkpoint', 'eval JSON', 'a directory' or 'another file'
    (None where nothing exists)."""
    path = Path(path)
    if not path.exists():
        return None
    if path.is_dir():
        return "a directory"
    if zipfile.is_zipfile(path):
        return _zip_kind(path)
    return _json_kind(path)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # also through links and other spellings
    except OSError:
        return a.resolve() == b.resolve()


def _check_parents(dest: Path, option: str) -> None:
    for parent in dest.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {dest}: {parent} is a file, not a directory")
            return


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [n for n in names if n.endswith("data.pkl")]
            if pickles:
                return _checkpoint_kind(archive.read(pickles[0]))
    except (OSError, zipfile.BadZipFile):
        return "another file"
    if names and all(n.endswith(".npy") for n in names):
        return _npz_kind(path, {n[:-4] for n in names})
    return "another file"


def _npz_kind(path: Path, keys: set[str]) -> str:
    if {"tours", "lengths"} <= keys:
        return "policy tours" if _solver(path).startswith("policy:") else "reference tours"
    if keys & {"locs", "cost_matrix"}:
        return "instances"
    return "another file"


def _solver(path: Path) -> str:
    """The ``solver`` a tours file records ('' where it has none or cannot be read)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return str(data["solver"]) if "solver" in data.files else ""
    except (OSError, ValueError, zipfile.BadZipFile):
        return ""


def _checkpoint_kind(pickle_bytes: bytes) -> str:
    """A torch checkpoint's kind from the strings its pickle holds (nothing is executed)."""
    try:
        strings = {arg for op, arg, _ in pickletools.genops(pickle_bytes) if isinstance(arg, str)}
    except Exception:  # a damaged pickle raises whatever its first bad opcode gives
        return "another file"
    if "state_dict" not in strings:
        return "another file"
    return "training checkpoint" if strings & {"optimizer_states", "loops"} else "weights-only checkpoint"


def _json_kind(path: Path) -> str:
    if path.stat().st_size > JSON_PEEK_BYTES:
        return "another file"
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return "another file"
    return "eval JSON" if isinstance(data, dict) and {"mean_length", "files"} & set(data) else "another file"


def _describe(path: Path, kind: str) -> str:
    """The kind as a phrase, with the solver that wrote a tours file."""
    solver = _solver(path) if kind.endswith("tours") else ""
    return f"{kind} ({solver})" if solver else _phrase(kind)


def _phrase(kind: str) -> str:
    if kind == "another file":
        return "another kind of file"
    return f"an {kind}" if kind.startswith("eval") else f"a {kind}" if kind.endswith("checkpoint") else kind
