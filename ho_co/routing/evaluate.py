"""`ho-co eval`: a trained checkpoint decoded on instance files, with lengths, gap and time.

The decoding itself (multi-start greedy, augmentation, normalised inputs, checked tours) is
`ho_co.routing.decode`; the drawing `ho_co.routing.figures`, the several-file table
`ho_co.routing.report.format_table`. Here: the files and references read and matched, every
output path checked before any work, one result row per instance file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ho_co.outputs import check_output, per_file_outputs
from ho_co.problems.files import instance_files, load_instances
from ho_co.problems.instances import Instances
from ho_co.problems.references import References, load_references
from ho_co.problems.tours import gaps
from ho_co.problems.tsplib import read_optima
from ho_co.routing.cpu import settle_cpu_process
from ho_co.routing.decode import decode
from ho_co.routing.figures import render_tours
from ho_co.routing.policies import check_one_hot_width, policy_from_checkpoint, policy_options


def evaluate(checkpoint, instances, reference=None, num_augment: int = 1, num_starts: int | None = None,
             batch_size: int = 256, device: str = "cpu", seed: int = 0, render: str | None = None,
             render_count: int = 4, json_out: str | None = None, out: str | None = None,
             optima: str | None = None, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """`ho-co eval`: mean length, gap, time per instance, for one instance file or several
    (``instances``: a path, a directory, or a list of them; one result row per file).

    The gap comes from ``reference`` (a `ho-co solve` output or a TSPLIB ``.opt.tour``; a
    directory of ``NAME.npz`` for several files) or from ``optima`` (lines ``name: length``).
    ``out`` writes the tours and their lengths in `ho-co solve`'s format (a directory of
    ``NAME.npz`` for several files). One file gives its result dict; several give
    ``{"files": [rows], "mean_gap_percent": ...}`` (see `report.format_table`). Every output path is
    checked before decoding starts: never one of the inputs, never a file of another kind
    (reference tours, a checkpoint...) unless ``overwrite``.
    """
    if num_augment < 1:
        raise ValueError(f"--augment must be >= 1, got {num_augment}")
    check_device(device)
    if torch.device(device).type == "cpu":
        settle_cpu_process()  # decoding batch after batch: reused pages, no slow subnormals (ho_co.routing.cpu)
    if reference and optima:
        raise ValueError("give --reference or --optima, not both")
    files = instance_files(instances)
    if render and len(files) > 1:
        raise ValueError(f"--render draws one instance file; {len(files)} were given")
    out_paths = _checked_outputs(files, checkpoint, reference, optima, out, json_out, render, overwrite)
    policy, env, cfg = policy_from_checkpoint(checkpoint, device)
    problem = "tsp" if getattr(env, "problem", env.name) == "tsp" else "atsp"
    optimum_of = read_optima(optima) if optima else None
    rows = []
    for i, path in enumerate(files):
        inst = load_instances(path, problem=problem)
        _check_policy_takes(cfg, inst, path)
        if num_starts is not None and not 1 <= num_starts <= inst.num_loc:
            raise ValueError(f"{path}: --starts {num_starts} is outside 1..{inst.num_loc} (its instances' nodes)")
        ref = None
        if reference:
            ref = load_references(Path(reference) / f"{path.stem}.npz" if len(files) > 1 else reference, inst)
        elif optimum_of is not None:
            ref = _optimum_reference(optimum_of, inst, path, optima)
        decoded = decode(policy, env, inst, num_starts, num_augment, batch_size, seed, device,
                         progress and len(files) == 1)
        tours, lengths, seconds = decoded.tours, decoded.lengths, decoded.seconds
        row = {
            "checkpoint": str(checkpoint), "instances": str(path), "problem": problem,
            "name": inst.name or path.stem, "edge_weight_type": inst.edge_weight_type,
            "num_instances": len(inst), "num_loc": inst.num_loc, "num_starts": num_starts or inst.num_loc,
            "num_augment": num_augment, "mean_length": float(lengths.mean()),
            "time_per_instance_ms": 1000.0 * seconds / len(inst), "total_seconds": seconds,
            "device": device, "valid_tours": True,  # decode() raised otherwise
        }
        if ref is not None:
            row.update(reference=str(reference or optima), reference_solver=ref.solver,
                       reference_mean_length=float(ref.lengths.mean()),
                       reference_optimal_fraction=float(ref.optimal.mean()),
                       mean_gap_percent=float(gaps(lengths, ref.lengths).mean()))
        if num_augment > 1:  # the plain decode (copy 0) beside the best of all copies, as the run summary has it
            greedy = decoded.plain_lengths
            row["greedy_mean_length"] = float(greedy.mean())
            if ref is not None:
                row["greedy_gap_percent"] = float(gaps(greedy, ref.lengths).mean())
        if out:
            dest = out_paths[i]
            References(tours, lengths, np.zeros(len(inst), bool), np.full(len(inst), "policy"),
                       f"policy:{Path(checkpoint).name}", inst.digest).save(dest)
            row["out"] = str(dest)
        if render:
            drawn = {"policy": (tours, lengths)}
            if ref is not None and ref.tours is not None:
                drawn[ref.solver] = (ref.tours, ref.lengths)
            row["render"] = str(render_tours(inst, drawn, render, render_count))
        rows.append(row)
    result = rows[0] if len(rows) == 1 else {"files": rows, **_means(rows)}
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def check_device(device: str) -> None:
    """--device names a device torch has here (before the checkpoint is loaded onto it)."""
    try:
        kind = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"--device {device}: not a torch device (cpu, cuda, cuda:N, ...)") from err
    if kind.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__})")
    if kind.type == "cuda" and kind.index is not None and kind.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def _checked_outputs(files, checkpoint, reference, optima, out, json_out, render, overwrite) -> list[Path]:
    """Where `evaluate` writes, refused before any work if that would destroy an input or replace
    a file of another kind (see `ho_co.outputs`); the tours' path per instance file."""
    references = [Path(reference) / f"{p.stem}.npz" for p in files] if reference and len(files) > 1 else [reference]
    inputs = [*files, checkpoint, optima, *references]
    out_paths = per_file_outputs(files, out) if out else []
    for dest in out_paths:
        check_output(dest, "policy tours", inputs=inputs, overwrite=overwrite)
    if json_out:
        check_output(json_out, "eval JSON", inputs=inputs + out_paths, overwrite=overwrite, option="--json")
    if render:
        check_output(render, "another file", inputs=inputs + out_paths, overwrite=overwrite, option="--render")
    return out_paths


def _means(rows: list[dict[str, Any]]) -> dict[str, float]:
    means = {"time_per_instance_ms": float(np.mean([r["time_per_instance_ms"] for r in rows]))}
    for key in ("mean_gap_percent", "greedy_gap_percent"):
        if all(key in r for r in rows):
            means[key] = float(np.mean([r[key] for r in rows]))
    return means


def _check_policy_takes(cfg, inst: Instances, path: Path) -> None:
    """A file larger than MatNet's one-hot embedding is an error naming both numbers."""
    try:
        check_one_hot_width(num_loc=inst.num_loc, **policy_options(cfg["model"]["policy"]))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _optimum_reference(optimum_of: dict[str, float], inst: Instances, path: Path, optima) -> References:
    """The published optimum of one TSPLIB instance, as a reference without a tour."""
    name = inst.name or path.stem
    if len(inst) != 1 or name not in optimum_of:
        raise ValueError(f"{optima}: no optimum listed for {name} ({path})")
    return References(None, np.array([optimum_of[name]]), np.ones(1, bool), np.array(["published"]),
                      "published optimum")
