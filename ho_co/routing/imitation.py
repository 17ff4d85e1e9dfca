"""Imitation of reference tours: a supervised warm start for POMO, by teacher forcing.

`ImitationMatNet` is rl4co's MatNet module (POMO) whose training step imitates the tours of a
labelled pool instead of sampling its own. Each instance keeps POMO's multi-start layout: start
copy s follows the reference tour read from node s (the tour rotated to begin there), and the
loss is the negative log-likelihood the policy gives those actions, computed by rl4co's own
"evaluate" decoding (`policy(td, env, actions=...)`; the fast policy runs it as one pass over
the given tours). Validation, callbacks, the policy and its state dict are MatNet's, so a
checkpoint of this module starts a POMO run through `model.policy.init_from`.

An ATSP pool can be doubled at no labelling cost (`transpose`): the reversed tour is optimal for
the transposed matrix, and MatNet's tmat class is closed under transposition (the shortest-path
closure commutes with it), so each instance may be shown as (C^T, reversed tour) instead.

The pool is an instance file and its reference tours (`ho-co make-data`, `ho-co solve`), or
several such pairs (a pool grown by a new seed keeps its first file), read and checked once; an
epoch is one pass over it, shuffled per epoch from (seed, epoch). Labelling is not part of
training: its CPU time is counted where the pool is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from rl4co.data.dataset import FastTdDataset
from rl4co.models import MatNet
from torch import Tensor
from torch.utils.data import DataLoader

from ho_co.problems import load_instances, load_references
from ho_co.routing.envs import instances_to_td


class TourPool(FastTdDataset):
    """Instances (as the env's reset reads them) with their reference tours under "tours".
    `fixed`: `EpochSeed` reads it as it is every epoch instead of drawing new instances into it."""

    fixed = True

    def __getitems__(self, idx):
        return self.data[torch.as_tensor(idx)]


def read_pool(instances: str | Sequence[str], reference: str | Sequence[str], env) -> TourPool:
    """The labelled pool: `instances` (a `.npz` instance file of the env's problem and N, or a list
    of them) and `reference` (their tours as `ho-co solve` writes them, one file per instance
    file), each pair checked to belong together; several pairs make one pool, in their order."""
    instances, reference = _files(instances), _files(reference)
    if len(instances) != len(reference):
        raise ValueError(f"model.pool names {len(instances)} instance files but model.pool_reference "
                         f"{len(reference)} tour files: one tour file each")
    problem, parts = getattr(env, "problem", env.name), []
    for inst_file, ref_file in zip(instances, reference):
        inst = load_instances(inst_file, problem=problem, num_loc=env.generator.num_loc)
        refs = load_references(ref_file, inst)  # one instance each, permutations, the file's lengths
        data = instances_to_td(inst)
        data["tours"] = torch.as_tensor(refs.tours, dtype=torch.int64)
        rank_zero_info(f"imitation pool: {len(inst)} instances of N={inst.num_loc} from {inst_file}, "
                       f"{int(refs.optimal.sum())} of their tours proven optimal ({ref_file})")
        parts.append(data)
    return TourPool(torch.cat(parts))


def _files(paths: str | Sequence[str]) -> list[str]:
    return [paths] if isinstance(paths, (str, Path)) else list(paths)


def rotations(tours: Tensor, starts: Tensor) -> Tensor:
    """tours [B, N] read cyclically from the nodes starts [R, B]: [R, B, N], row (r, b) being
    tours[b] rotated to begin at node starts[r, b]."""
    rows, batch = starts.shape
    n = tours.size(-1)
    steps = torch.arange(n, device=tours.device)
    position = torch.empty_like(tours).scatter_(-1, tours, steps.expand_as(tours))  # where each node sits
    offset = position.gather(-1, starts.t()).t()  # [R, B]
    return tours.expand(rows, batch, n).gather(-1, (offset.unsqueeze(-1) + steps) % n)


class ImitationMatNet(MatNet):
    """MatNet trained on reference tours by teacher forcing; validation is POMO's.

    Directions: a symmetric (TSP) tour is one cycle that reads two ways from each start. Both
    readings are scored, as 2N start copies of one pass (one encoder run), and the loss per start
    is -log(p(forward) + p(backward)): the probability that the policy builds the reference cycle
    from that start at all. Its gradient weights each reading by the policy's own preference (the
    soft form of "the direction the policy finds more likely"), so the policy is neither held to
    the direction the solver happened to write nor pushed to split its mass evenly. An ATSP tour
    has one direction and is scored as written.

    pool / pool_reference: the labelled pool (`read_pool`: a file pair, or lists of them); an
    epoch is one pass over it, in an order shuffled from (shuffle_seed, epoch) (under DDP,
    Lightning's distributed sampler shards and shuffles it instead). transpose (ATSP): each
    instance of a batch is shown transposed with its tour reversed with probability 1/2, drawn
    from (shuffle_seed, epoch, batch). Every other argument is MatNet's.
    """

    def __init__(self, env, policy=None, pool: str | Sequence[str] | None = None,
                 pool_reference: str | Sequence[str] | None = None,
                 shuffle_seed: int = 0, num_starts: int | None = None, transpose: bool = False, **kwargs):
        if not pool or not pool_reference:
            raise ValueError("imitation needs model.pool (an instance file) and model.pool_reference "
                             "(its tours, from ho-co solve)")
        if num_starts not in (None, env.generator.num_loc):
            raise ValueError(f"model.num_starts={num_starts}: imitation teaches the tour from every node "
                             f"(num_starts null, or N={env.generator.num_loc})")
        super().__init__(env, policy=policy, num_starts=num_starts, **kwargs)
        self.pool = read_pool(pool, pool_reference, env)
        self.shuffle_seed = shuffle_seed
        self.directions = 2 if getattr(env, "problem", env.name) == "tsp" else 1
        if transpose and self.directions != 1:
            raise ValueError("model.transpose is for ATSP pools: a TSP matrix is its own transpose, "
                             "and both directions of its tours are taught already")
        self.transpose = transpose

    def setup(self, stage="fit"):
        super().setup(stage)
        self.train_dataset = self.pool

    def epoch_generator(self, *key: int) -> torch.Generator:
        """A generator seeded from (shuffle_seed, epoch, *key): the same draws on a rerun."""
        state = np.random.SeedSequence((self.shuffle_seed, self.current_epoch, *key)).generate_state(1)
        return torch.Generator().manual_seed(int(state[0]))

    def train_dataloader(self):
        """The pool in this epoch's order (Lightning asks again every epoch)."""
        return DataLoader(self.pool, batch_size=self.train_batch_size, shuffle=True, generator=self.epoch_generator(),
                          num_workers=self.dataloader_num_workers, collate_fn=self.pool.collate_fn)

    def on_train_epoch_end(self):
        """rl4co draws the next epoch's instances here (and POMO's shared baseline has nothing to
        update); the pool is read again instead."""

    def transposed_half(self, batch, batch_idx: int):
        """The batch with a random half of its instances (about; drawn from (shuffle_seed, epoch,
        batch_idx)) replaced by their transposes, whose optimal tours are the reversed ones."""
        flip = torch.rand(batch.batch_size[0], generator=self.epoch_generator(batch_idx)) < 0.5
        flip = flip.to(batch.device)
        cost, tours = batch["cost_matrix"], batch["tours"]
        return batch.clone(recurse=False).update({
            "cost_matrix": torch.where(flip[:, None, None], cost.transpose(-1, -2), cost),
            "tours": torch.where(flip[:, None], tours.flip(-1), tours),
        })

    def teacher_tours(self, td, tours: Tensor) -> Tensor:
        """The reference tours [D * N, B, N] in rl4co's multi-start rows: start copy s of
        direction d (row d * N + s) reads the tour from the node the env starts copy s at."""
        num_loc = tours.size(-1)
        starts = self.env.select_start_nodes(td, num_starts=self.directions * num_loc).view(-1, tours.size(0))
        readings = [tours, tours.flip(-1)][: self.directions]
        return torch.cat([rotations(t, s) for t, s in zip(readings, starts.split(num_loc))])

    def teacher_log_likelihood(self, td, tours: Tensor) -> Tensor:
        """The policy's log-likelihood [D, N, B] of the reference tours [B, N] read from every start
        node (`teacher_tours`), by rl4co's evaluation of given actions; td: the env's reset batch."""
        teacher = self.teacher_tours(td, tours)
        out = self.policy(td, self.env, phase="train", actions=teacher[..., 1:].flatten(0, 1),
                          num_starts=teacher.size(0))
        return out["log_likelihood"].view(self.directions, -1, td.batch_size[0])

    def shared_step(self, batch, batch_idx: int, phase: str, dataloader_idx: int | None = None):
        if phase != "train":
            return super().shared_step(batch, batch_idx, phase, dataloader_idx=dataloader_idx)
        if self.transpose:
            batch = self.transposed_half(batch, batch_idx)
        td = self.env.reset(batch.exclude("tours"))
        loss = -torch.logsumexp(self.teacher_log_likelihood(td, batch["tours"]), 0).mean()
        metrics = self.log_metrics({"loss": loss}, phase, dataloader_idx=dataloader_idx)
        return {"loss": loss, **metrics}
