"""Decode a trained policy on instance files: multi-start greedy, augmentation, lengths, gap.

Every tour is checked to be a permutation before it counts, and lengths are re-measured on the
instances' own cost matrix (`ho_co.problems.tours`), never taken from the policy's reward. Every
file is decoded from a normalised copy (see `policy_input`) and measured in its own metric. MatNet's augmentation is its own: the same instance decoded again with fresh
random one-hot column embeddings (rl4co's dihedral/symmetric transforms act on coordinates,
which a cost matrix does not have); coordinate policies (AM/POMO on TSP) use rl4co's dihedral-8
/ symmetric one. Copy 0 of every augmentation is the plain decode (the identity transform, the
same seeded draw), so more augmentations never give a longer tour.
"""

from __future__ import annotations

import copy
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from rl4co.data.transforms import StateAugmentation
from rl4co.utils.ops import gather_by_index, unbatchify

from ho_co.outputs import check_output, per_file_outputs
from ho_co.problems.instances import Instances, instance_files, load_instances
from ho_co.problems.references import References, load_references
from ho_co.problems.tours import check_tours, gaps, tour_lengths
from ho_co.routing.policies import policy_from_checkpoint


def is_matrix_env(env) -> bool:
    """Our TSP/ATSP envs feed MatNet a cost matrix (no coordinate transforms apply)."""
    return env.name == "atsp"


def augmented_copy(td: TensorDict, env, k: int, num_augment: int) -> TensorDict:
    """Copy ``k`` of ``num_augment`` of each instance; copy 0 is the instance itself.

    MatNet's copies are the instance again (its random one-hot embeddings, drawn per copy under
    the copy's seed, make the difference); coordinate policies take rl4co's transforms.
    """
    if num_augment <= 1 or k == 0 or is_matrix_env(env):
        return td
    fn = "dihedral8" if num_augment == 8 else "symmetric"
    b = td.batch_size[0]
    return StateAugmentation(num_augment=num_augment, augment_fn=fn)(td)[k * b:(k + 1) * b]


def policy_input(instances: Instances, env) -> TensorDict:
    """The TensorDict the policy decodes: the instances in the units it was trained in, so a file
    in other units gives the same tours (lengths are measured on the file's own costs afterwards).
    Coordinate policies get the points moved into the unit square; MatNet gets a matrix (see
    `matrix_for_policy`)."""
    if is_matrix_env(env):
        cost = matrix_for_policy(instances, env)
        return TensorDict({"cost_matrix": torch.as_tensor(cost, dtype=torch.float32)}, batch_size=[len(instances)])
    if instances.locs is None:
        if instances.edge_weight_type:
            raise ValueError(f"{instances.name}: this policy reads coordinates, and the file has none "
                             f"(EDGE_WEIGHT_TYPE {instances.edge_weight_type} without DISPLAY_DATA)")
        raise ValueError("this policy reads coordinates, and the instances are a cost matrix only")
    return TensorDict({"locs": torch.as_tensor(unit_square(instances.locs), dtype=torch.float32)},
                      batch_size=[len(instances)])


def unit_square(locs: np.ndarray) -> np.ndarray:
    """Each instance's points shifted to the origin and scaled so the wider side spans [0, 1]."""
    locs = np.asarray(locs, dtype=np.float64)
    shifted = locs - locs.min(axis=1, keepdims=True)
    return shifted / np.maximum(shifted.max(axis=(1, 2), keepdims=True), 1e-12)


def matrix_for_policy(instances: Instances, env) -> np.ndarray:
    """MatNet's input: each matrix (a TSPLIB file's, an .npz's, or the distances of its points)
    scaled so its mean cost is the training generator's at this N. Units do not matter, and
    instances drawn like the training ones stay almost as they are."""
    cost = np.asarray(instances.cost_matrix, dtype=np.float64)
    scale = generator_mean_cost(env, instances.num_loc) / np.maximum(mean_cost(cost), 1e-12)
    return cost * scale[:, None, None]


def mean_cost(cost) -> np.ndarray:
    """Mean off-diagonal entry of each [N, N] matrix of a batch."""
    cost = np.asarray(cost, dtype=np.float64)
    n = cost.shape[-1]
    return (cost.sum(axis=(1, 2)) - np.trace(cost, axis1=1, axis2=2)) / (n * (n - 1))


def generator_mean_cost(env, num_loc: int, draws: int = 16) -> float:
    """Mean cost of the env's own instance generator at `num_loc` nodes (a fixed seeded draw,
    the caller's RNG untouched)."""
    from ho_co.problems.instances import distance_matrix

    generator = copy.copy(env.generator)
    generator.num_loc = num_loc
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        td = generator(draws)
    cost = td["cost_matrix"] if "cost_matrix" in td.keys() else distance_matrix(td["locs"].double())
    return float(mean_cost(cost.cpu().numpy()).mean())


@contextmanager
def seeded(seed: int | None, device: torch.device):
    """Fixed RNG inside (MatNet's embeddings are random), the caller's RNG untouched after."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextmanager
def full_precision_matmuls():
    """Measure at float32 precision: a trainer may have set bf16 matmuls process-wide (rl4co's
    does), and validation, the run summary and `ho-co eval` must give the same numbers."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def copy_seed(seed: int, k: int) -> int:
    """The seed of augmentation copy ``k``: copy 0 draws what a decode without augmentation draws."""
    return seed if k == 0 else int(np.random.SeedSequence((seed, k)).generate_state(1)[0])


@torch.inference_mode()
def decode_batch(policy, env, td: TensorDict, num_starts: int | None = None) -> torch.Tensor:
    """Best tour [B, N] per instance of one batch: greedy from every start node (POMO)."""
    td = env.reset(td)
    n_start = td["action_mask"].size(-1) if num_starts is None else num_starts  # N of these instances
    decode_type = "multistart_greedy" if n_start > 1 else "greedy"
    out = policy(td, env, phase="test", decode_type=decode_type, num_starts=n_start, return_actions=True)
    if n_start <= 1:
        return out["actions"]
    reward = unbatchify(out["reward"], n_start)  # [B, S]
    return gather_by_index(unbatchify(out["actions"], n_start), reward.argmax(dim=1), dim=1)


def decode(policy, env, instances: Instances, num_starts=None, num_augment=1, batch_size=256,
           seed: int | None = 0, device="cpu", progress: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Tours, lengths (float64, re-measured on the instances) and decoding seconds: for each
    instance the shortest of its ``num_augment`` copies' best multi-start tours."""
    if num_augment < 1:
        raise ValueError(f"num_augment must be >= 1, got {num_augment}")
    if num_starts is not None and not 1 <= num_starts <= instances.num_loc:
        raise ValueError(f"num_starts must be in 1..{instances.num_loc} (the nodes), got {num_starts}")
    device = torch.device(device)
    td_all = policy_input(instances, env)
    best_tours, best_lengths = [], []
    batches = range(0, len(instances), batch_size)
    if progress:
        from rich.progress import track

        batches = track(batches, description="decoding")
    was_training = policy.training
    policy.eval()
    start = time.perf_counter()
    with full_precision_matmuls():
        for i in batches:
            td = td_all[i : i + batch_size].to(device)
            cost = instances.cost_matrix[i : i + batch_size]
            for k in range(num_augment):
                with seeded(None if seed is None else copy_seed(seed, k), device):
                    tours = decode_batch(policy, env, augmented_copy(td, env, k, num_augment), num_starts)
                tours = tours.cpu().numpy()
                check_tours(tours, instances.num_loc)
                lengths = tour_lengths(cost, tours)
                if k == 0:
                    best_tours.append(tours)
                    best_lengths.append(lengths)
                else:
                    better = lengths < best_lengths[-1]
                    best_tours[-1][better], best_lengths[-1][better] = tours[better], lengths[better]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    policy.train(was_training)
    return np.concatenate(best_tours), np.concatenate(best_lengths), seconds


def render_tours(instances: Instances, rows: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path,
                 count: int = 4) -> Path:
    """Draw the first `count` instances' tours to one PNG, one row per solver in `rows`
    ({label: (tours, lengths)}, the reference last), each tour titled with its length and the
    reference's (TSP with coordinates)."""
    if instances.locs is None:
        raise ValueError("these instances have no coordinates (ATSP or matrix-only TSP): nothing to draw")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(count, len(instances))
    last_label, (_, last_lengths) = list(rows.items())[-1]
    fig, axes = plt.subplots(len(rows), count, figsize=(3.0 * count, 3.1 * len(rows)), squeeze=False)
    for ax_row, (label, (tours, lengths)) in zip(axes, rows.items()):
        for ax, b in zip(ax_row, range(count)):
            pts = instances.locs[b][np.append(tours[b], tours[b][0])]
            ax.plot(pts[:, 0], pts[:, 1], "-o", ms=3, lw=1)
            title = f"#{b} {label} {lengths[b]:.4f}"
            if label != last_label:  # beside the last row's (the reference) length
                title += f"\n{last_label} {last_lengths[b]:.4f} ({100 * (lengths[b] / last_lengths[b] - 1):+.2f}%)"
            ax.set_title(title, fontsize=9)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    ``{"files": [rows], "mean_gap_percent": ...}`` (see `format_table`). Every output path is
    checked before decoding starts: never one of the inputs, never a file of another kind
    (reference tours, a checkpoint...) unless ``overwrite``.
    """
    if num_augment < 1:
        raise ValueError(f"--augment must be >= 1, got {num_augment}")
    check_device(device)
    if reference and optima:
        raise ValueError("give --reference or --optima, not both")
    files = instance_files(instances)
    if render and len(files) > 1:
        raise ValueError(f"--render draws one instance file; {len(files)} were given")
    out_paths = _checked_outputs(files, checkpoint, reference, optima, out, json_out, render, overwrite)
    policy, env, cfg = policy_from_checkpoint(checkpoint, device)
    problem = "tsp" if getattr(env, "problem", env.name) == "tsp" else "atsp"
    optimum_of = None
    if optima:
        from ho_co.problems.tsplib import read_optima

        optimum_of = read_optima(optima)
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
        tours, lengths, seconds = decode(policy, env, inst, num_starts, num_augment, batch_size, seed,
                                         device, progress and len(files) == 1)
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
        if num_augment > 1:  # the plain decode beside the best of all copies, as the run summary has it
            _, greedy, _ = decode(policy, env, inst, num_starts, 1, batch_size, seed, device)
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


def format_table(result: dict[str, Any]) -> str:
    """The per-file Markdown table of a several-file `evaluate` result, with the mean."""
    lines = ["| name | N | type | optimum | length | gap % | ms |", "|---|---|---|---|---|---|---|"]
    for r in result["files"]:
        ref = f"{r['reference_mean_length']:.6g}" if "reference_mean_length" in r else "-"
        gap = f"{r['mean_gap_percent']:.2f}" if "mean_gap_percent" in r else "-"
        lines.append(f"| {r['name']} | {r['num_loc']} | {r['edge_weight_type'] or r['problem'].upper()} | {ref} "
                     f"| {r['mean_length']:.6g} | {gap} | {r['time_per_instance_ms']:.1f} |")
    gap = f"{result['mean_gap_percent']:.2f}" if "mean_gap_percent" in result else "-"
    lines.append(f"| mean ({len(result['files'])} files) | | | | | {gap} | {result['time_per_instance_ms']:.1f} |")
    return "\n".join(lines)


def _means(rows: list[dict[str, Any]]) -> dict[str, float]:
    means = {"time_per_instance_ms": float(np.mean([r["time_per_instance_ms"] for r in rows]))}
    if all("mean_gap_percent" in r for r in rows):
        means["mean_gap_percent"] = float(np.mean([r["mean_gap_percent"] for r in rows]))
    return means


def _check_policy_takes(cfg, inst: Instances, path: Path) -> None:
    """A file larger than MatNet's one-hot embedding is an error naming both numbers."""
    from ho_co.routing.policies import check_one_hot_width

    policy_cfg = {k: v for k, v in cfg["model"]["policy"].items() if k != "_target_"}
    try:
        check_one_hot_width(num_loc=inst.num_loc, **policy_cfg)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _optimum_reference(optimum_of: dict[str, float], inst: Instances, path: Path, optima) -> References:
    """The published optimum of one TSPLIB instance, as a reference without a tour."""
    name = inst.name or path.stem
    if len(inst) != 1 or name not in optimum_of:
        raise ValueError(f"{optima}: no optimum listed for {name} ({path})")
    return References(None, np.array([optimum_of[name]]), np.ones(1, bool), np.array(["published"]),
                      "published optimum")
