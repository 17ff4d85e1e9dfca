"""Decode a trained policy on instance files: multi-start greedy, augmentation, lengths, gap.

Every tour is checked to be a permutation before it counts, and lengths are recomputed from
the instances (`ho_co.solvers.tours`), never taken from the policy's reward. MatNet's
augmentation is its own: the same instance decoded again with fresh random one-hot column
embeddings (rl4co's dihedral/symmetric transforms act on coordinates, which a cost matrix
does not have); coordinate policies (AM/POMO on TSP) use rl4co's dihedral-8 / symmetric one.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from rl4co.data.transforms import StateAugmentation
from rl4co.utils.ops import batchify, gather_by_index, unbatchify

from ho_co.routing.envs import instances_to_td
from ho_co.routing.instances import Instances, load_instances
from ho_co.solvers.tours import check_tours, mean_gap, tour_lengths


@dataclass
class Reference:
    """Reference tours from `ho-co solve` (.npz: tours, lengths, optimal, solver)."""

    lengths: np.ndarray
    optimal: np.ndarray
    solver: str
    tours: np.ndarray


def load_reference(path: str | Path, instances: Instances) -> Reference:
    """Read a reference file and check it belongs to `instances` (its tours, re-measured,
    must give its lengths), so a mismatched pair fails instead of giving a wrong gap."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such reference file")
    with np.load(path, allow_pickle=False) as data:
        missing = {"tours", "lengths"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: reference file lacks {sorted(missing)}; keys found: {sorted(data.files)}")
        tours, lengths = data["tours"], data["lengths"].astype(np.float64)
        optimal = data["optimal"] if "optimal" in data.files else np.zeros(len(lengths), bool)
        solver = str(data["solver"]) if "solver" in data.files else "unknown"
    if lengths.shape != (len(instances),) or tours.shape != (len(instances), instances.num_loc):
        raise ValueError(
            f"{path}: reference has tours {list(tours.shape)} and lengths {list(lengths.shape)}, "
            f"but the instance file has {len(instances)} instances of N={instances.num_loc}"
        )
    check_tours(tours, instances.num_loc)
    measured = tour_lengths(tours, cost_matrix=instances.cost_matrix)
    bad = np.flatnonzero(~np.isclose(measured, lengths, rtol=1e-4, atol=1e-6))
    if bad.size:
        b = bad[0]
        raise ValueError(
            f"{path}: reference tour of instance {b} has length {measured[b]:.6g} on these instances, "
            f"the file says {lengths[b]:.6g}: the reference belongs to other instances"
        )
    return Reference(lengths, optimal.astype(bool), solver, tours)


def is_matrix_env(env) -> bool:
    """Our TSP/ATSP envs feed MatNet a cost matrix (no coordinate transforms apply)."""
    return env.name == "atsp"


def augment(td: TensorDict, env, num_augment: int) -> TensorDict:
    """`num_augment` copies of each (reset) instance, ordered as POMO's shared_step does."""
    if num_augment <= 1:
        return td
    if is_matrix_env(env):
        return batchify(td, num_augment)  # MatNet redraws its random one-hot embeddings per copy
    fn = "dihedral8" if num_augment == 8 else "symmetric"
    return StateAugmentation(num_augment=num_augment, augment_fn=fn)(td)


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


@torch.inference_mode()
def decode(policy, env, td: TensorDict, num_starts: int | None = None, num_augment: int = 1) -> torch.Tensor:
    """Best tour [B, N] per instance: greedy from every start node (POMO), over augmentations."""
    td = env.reset(td)
    n_start = env.get_num_starts(td) if num_starts is None else num_starts
    td = augment(td, env, num_augment)
    decode_type = "multistart_greedy" if n_start > 1 else "greedy"
    out = policy(td, env, phase="test", decode_type=decode_type, num_starts=n_start, return_actions=True)
    shape = (num_augment if num_augment > 1 else 0, n_start if n_start > 1 else 0)
    reward = unbatchify(out["reward"], shape).reshape(td.batch_size[0] // max(num_augment, 1), -1)
    actions = unbatchify(out["actions"], shape)
    actions = actions.reshape(reward.shape[0], reward.shape[1], -1)
    return gather_by_index(actions, reward.argmax(dim=1), dim=1)


def solve(policy, env, instances: Instances, num_starts=None, num_augment=1, batch_size=256,
          seed: int | None = 0, device="cpu", progress: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Tours, lengths (float64, recomputed) and decoding seconds for all `instances`."""
    device = torch.device(device)
    td_all = instances_to_td(instances)
    tours = []
    batches = range(0, len(instances), batch_size)
    if progress:
        from rich.progress import track

        batches = track(batches, description="decoding")
    was_training = policy.training
    policy.eval()
    start = time.perf_counter()
    with seeded(seed, device), full_precision_matmuls():
        for i in batches:
            td = td_all[i : i + batch_size].to(device)
            tours.append(decode(policy, env, td, num_starts, num_augment).cpu())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    policy.train(was_training)
    tours = torch.cat(tours).numpy()
    check_tours(tours, instances.num_loc)
    return tours, tour_lengths(tours, cost_matrix=instances.cost_matrix), seconds


def load_checkpoint(path: str | Path, device="cpu"):
    """(policy, env, config) rebuilt from a `ho-co train` checkpoint (full or weights-only)."""
    from hydra.utils import instantiate

    from ho_co.routing.policies import build_policy

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:  # ho-co checkpoints hold tensors and plain containers only
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a loadable ho-co checkpoint ({type(err).__name__})") from err
    meta = ckpt.get("ho_co") if isinstance(ckpt, dict) else None
    if not meta or "config" not in meta:
        raise ValueError(f"{path}: not a ho-co checkpoint (no 'ho_co' config inside); train it with `ho-co train`")
    cfg = meta["config"]
    env = instantiate(cfg["env"])
    policy_cfg = {k: v for k, v in cfg["model"]["policy"].items() if k not in ("_target_", "init_from")}
    policy = build_policy(**policy_cfg, init_from=str(path))  # its own weights, HO layers as trained
    return policy.to(device).eval(), env, cfg


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
             render_count: int = 4, json_out: str | None = None, progress: bool = True) -> dict[str, Any]:
    """`ho-co eval`: mean length, gap against `reference`, time per instance; optional PNG/JSON."""
    if num_augment < 1:
        raise ValueError(f"--augment must be >= 1, got {num_augment}")
    policy, env, _ = load_checkpoint(checkpoint, device)
    problem = "tsp" if getattr(env, "problem", env.name) == "tsp" else "atsp"
    inst = load_instances(instances, problem=problem, num_loc=env.generator.num_loc)
    ref = load_reference(reference, inst) if reference else None
    tours, lengths, seconds = solve(policy, env, inst, num_starts, num_augment, batch_size, seed, device, progress)
    result = {
        "checkpoint": str(checkpoint),
        "instances": str(instances),
        "problem": problem,
        "num_instances": len(inst),
        "num_loc": inst.num_loc,
        "num_starts": num_starts or inst.num_loc,
        "num_augment": num_augment,
        "mean_length": float(lengths.mean()),
        "time_per_instance_ms": 1000.0 * seconds / len(inst),
        "total_seconds": seconds,
        "device": device,
        "valid_tours": True,  # solve() raised otherwise
    }
    if ref is not None:
        result.update(reference=str(reference), reference_solver=ref.solver,
                      reference_mean_length=float(ref.lengths.mean()),
                      reference_optimal_fraction=float(ref.optimal.mean()),
                      mean_gap_percent=mean_gap(lengths, ref.lengths))
    if render:
        rows = {"policy": (tours, lengths)}
        if ref is not None:
            rows[ref.solver] = (ref.tours, ref.lengths)
        result["render"] = str(render_tours(inst, rows, render, render_count))
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n")
    return result
