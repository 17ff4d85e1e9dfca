"""The decoding engine: a trained policy's tours on instances (multi-start greedy, augmentation).

Every tour is checked to be a permutation before it counts, and lengths are re-measured on the
instances' own cost matrix (`ho_co.problems.tours`), never taken from the policy's reward. Every
file is decoded from a normalised copy (see `policy_input`) and measured in its own metric.
MatNet's augmentation is its own: the same instance decoded again with fresh random one-hot
column embeddings (rl4co's dihedral/symmetric transforms act on coordinates, which a cost matrix
does not have); coordinate policies (AM/POMO on TSP) use rl4co's dihedral-8 / symmetric one.
MatNet's one-hots are drawn per instance and per copy from (seed, copy, instance index) alone:
the draws, and so the tours, do not depend on the batch size or the thread count, and `--starts`
changes the start nodes, never the draws.
Copy 0 of every augmentation is the plain decode (the identity transform, the same seeded draw),
so more augmentations never give a longer tour. Validation during training, the run summary and
`ho-co eval` all decode here.
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch
from tensordict import TensorDict

from rl4co.data.transforms import StateAugmentation
from rl4co.utils.ops import gather_by_index, unbatchify

from ho_co.problems.instances import Instances, distance_matrix
from ho_co.problems.tours import check_tours, tour_lengths
from ho_co.routing.one_hot import ONE_HOT_KEY, one_hot_embedding, seeded_positions


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
def decode_batch(policy, env, td: TensorDict, num_starts: int | None = None,
                 one_hot_position: torch.Tensor | None = None) -> torch.Tensor:
    """Best tour [B, N] per instance of one batch: greedy from every start node (POMO).
    ``one_hot_position`` [B, N] fixes MatNet's column one-hots (else the embedding draws them)."""
    td = env.reset(td)
    if one_hot_position is not None:
        td.set(ONE_HOT_KEY, one_hot_position.to(td.device))
    n_start = td["action_mask"].size(-1) if num_starts is None else num_starts  # N of these instances
    decode_type = "multistart_greedy" if n_start > 1 else "greedy"
    out = policy(td, env, phase="test", decode_type=decode_type, num_starts=n_start, return_actions=True)
    if n_start <= 1:
        return out["actions"]
    reward = unbatchify(out["reward"], n_start)  # [B, S]
    return gather_by_index(unbatchify(out["actions"], n_start), reward.argmax(dim=1), dim=1)


class Decoded(NamedTuple):
    """What `decode` found: the best of all copies, and copy 0 alone (the decode without
    augmentation, so an augmented run reports both from one pass)."""

    tours: np.ndarray  # [I, N]: per instance the shortest of its copies' best multi-start tours
    lengths: np.ndarray  # [I] float64, re-measured on the instances' own costs
    seconds: float
    plain_tours: np.ndarray  # copy 0's tours: what num_augment=1 decodes
    plain_lengths: np.ndarray


def warm_up(policy, env, td: TensorDict, num_starts: int | None, device: torch.device) -> None:
    """Decode one instance untimed, the RNG untouched: a first decode in a process compiles or
    loads the C++ kernels, and that is not decoding time."""
    with seeded(0, device):
        decode_batch(policy, env, td, num_starts)


def decode(policy, env, instances: Instances, num_starts=None, num_augment=1, batch_size=256,
           seed: int | None = 0, device="cpu", progress: bool = False) -> Decoded:
    """Tours, lengths and decoding seconds (after an untimed warm-up): for each instance the
    shortest of its ``num_augment`` copies' best multi-start tours, and copy 0's beside them."""
    if num_augment < 1:
        raise ValueError(f"num_augment must be >= 1, got {num_augment}")
    if num_starts is not None and not 1 <= num_starts <= instances.num_loc:
        raise ValueError(f"num_starts must be in 1..{instances.num_loc} (the nodes), got {num_starts}")
    device = torch.device(device)
    td_all = policy_input(instances, env)
    one_hot = one_hot_embedding(policy)
    best_tours, best_lengths, plain_tours, plain_lengths = [], [], [], []
    batches = range(0, len(instances), batch_size)
    if progress:
        from rich.progress import track

        batches = track(batches, description="decoding")
    was_training = policy.training
    policy.eval()
    with full_precision_matmuls():
        warm_up(policy, env, td_all[:1].to(device), num_starts, device)
        start = time.perf_counter()
        for i in batches:
            td = td_all[i : i + batch_size].to(device)
            cost = instances.cost_matrix[i : i + batch_size]
            for k in range(num_augment):
                position = None
                if one_hot is not None and seed is not None:  # per instance: any batching decodes alike
                    position = seeded_positions(seed, k, range(i, i + td.batch_size[0]), instances.num_loc,
                                                one_hot.width(instances.num_loc))
                with seeded(None if seed is None else copy_seed(seed, k), device):
                    tours = decode_batch(policy, env, augmented_copy(td, env, k, num_augment), num_starts, position)
                tours = tours.cpu().numpy()
                check_tours(tours, instances.num_loc)
                lengths = tour_lengths(cost, tours)
                if k == 0:
                    plain_tours.append(tours)
                    plain_lengths.append(lengths)
                    best_tours.append(tours.copy())
                    best_lengths.append(lengths.copy())
                else:
                    better = lengths < best_lengths[-1]
                    best_tours[-1][better], best_lengths[-1][better] = tours[better], lengths[better]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    policy.train(was_training)
    return Decoded(np.concatenate(best_tours), np.concatenate(best_lengths), seconds,
                   np.concatenate(plain_tours), np.concatenate(plain_lengths))
