"""TSP and ATSP for MatNet, on rl4co's `ATSPEnv`.

MatNet reads a cost matrix, so a Euclidean TSP instance (uniform points in the unit square, as
in the literature) is handed to it as its distance matrix. Rather than a new environment, the
TSP is rl4co's ATSP environment with a generator that draws coordinates; the env computes the
matrix at reset (on the batch's device), so datasets hold only the [N, 2] coordinates, not
[N, N] matrices, and the coordinates stay in the TensorDict for rendering.

Both envs keep rl4co's `name = "atsp"` on purpose: rl4co picks the MatNet embeddings and the
POMO start nodes (no depot) by that name. Files (our `.npz` and TSPLIB) are read through
`ho_co.problems`, which validates them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tensordict import TensorDict
from torch.distributions import Uniform
from torchrl.data import Bounded

from rl4co.envs.common.utils import Generator, get_sampler
from rl4co.envs.routing.atsp.env import ATSPEnv
from rl4co.envs.routing.atsp.generator import ATSPGenerator
from rl4co.envs.routing.tsp.render import render as render_tsp

from ho_co.problems.files import load_instances
from ho_co.problems.instances import distance_matrix


class TSPMatrixGenerator(Generator):
    """Uniform TSP coordinates; the env turns them into MatNet's distance matrix at reset."""

    def __init__(self, num_loc: int = 20, min_loc: float = 0.0, max_loc: float = 1.0,
                 loc_distribution=Uniform, **kwargs):
        self.num_loc = num_loc
        self.min_loc = min_loc
        self.max_loc = max_loc
        # Same sampler rl4co's TSPGenerator uses, so the two TSPs draw the same instances.
        self.loc_sampler = kwargs.get("loc_sampler") or get_sampler(
            "loc", loc_distribution, min_loc, max_loc, **kwargs
        )
        # ATSPEnv's spec reads these bounds of the matrix entries.
        self.min_dist = 0.0
        self.max_dist = (max_loc - min_loc) * 2**0.5

    def _generate(self, batch_size) -> TensorDict:
        locs = self.loc_sampler.sample((*batch_size, self.num_loc, 2))
        return TensorDict({"locs": locs}, batch_size=batch_size)


class _FileInstances:
    """Load `val_file`/`test_file` through the validated loader (npz or TSPLIB), and decode
    instances of any size: rl4co's ATSP reset sizes the action mask by the generator's num_loc,
    here it takes the N of the instances at hand (a TSPLIB file, a larger test set)."""

    problem: str

    def _reset(self, td: TensorDict | None = None, batch_size=None) -> TensorDict:
        out = super()._reset(td, batch_size=batch_size)
        n = out["cost_matrix"].size(-1)
        if out["action_mask"].size(-1) != n:
            out.set("action_mask", torch.ones((*out.batch_size, n), dtype=torch.bool, device=out.device))
        return out

    def load_data(self, fpath, batch_size=[]) -> TensorDict:
        inst = load_instances(Path(fpath), problem=self.problem, num_loc=self.generator.num_loc)
        return instances_to_td(inst)


def instances_to_td(inst) -> TensorDict:
    """An `Instances` record as the TensorDict the envs' reset expects.

    TSP with coordinates gives `locs` (the matrix env derives the distances, a coordinate
    policy reads them); otherwise the `cost_matrix` itself.
    """
    if inst.locs is not None:
        data = {"locs": torch.as_tensor(inst.locs, dtype=torch.float32)}
    else:
        data = {"cost_matrix": torch.as_tensor(inst.cost_matrix, dtype=torch.float32)}
    return TensorDict(data, batch_size=[len(inst)])


class TSPMatrixEnv(_FileInstances, ATSPEnv):
    """Euclidean TSP presented to the policy as a distance matrix (MatNet's TSP input)."""

    problem = "tsp"

    def __init__(self, generator: TSPMatrixGenerator | None = None, generator_params: dict = {}, **kwargs):
        super().__init__(generator=generator or TSPMatrixGenerator(**generator_params), **kwargs)
        self.observation_spec.set(
            "locs",
            Bounded(low=self.generator.min_loc, high=self.generator.max_loc,
                    shape=(self.generator.num_loc, 2), dtype=torch.float32),
        )

    def _reset(self, td: TensorDict | None = None, batch_size=None) -> TensorDict:
        locs = td.get("locs", None)
        if "cost_matrix" not in td.keys():
            if locs is None:
                raise ValueError("TSP instances need 'locs' or 'cost_matrix' in the TensorDict")
            td = td.clone(False).set("cost_matrix", distance_matrix(locs))
        out = super()._reset(td, batch_size=batch_size)
        if locs is not None:  # kept for rendering; matrix-only TSP files have none
            out.set("locs", locs)
        return out

    @staticmethod
    def render(td, actions=None, ax=None):
        return render_tsp(td, actions, ax)


class ATSPMatrixEnv(_FileInstances, ATSPEnv):
    """rl4co's ATSP (MatNet's tmat generator), reading instance files through our loader."""

    problem = "atsp"

    def __init__(self, generator: ATSPGenerator | None = None, generator_params: dict = {}, **kwargs):
        super().__init__(generator=generator or ATSPGenerator(**generator_params), **kwargs)


def make_env(problem: str, num_loc: int, **kwargs):
    """The environment for `problem` ("tsp" as a matrix for MatNet, or "atsp")."""
    envs = {"tsp": TSPMatrixEnv, "atsp": ATSPMatrixEnv}
    if problem not in envs:
        raise ValueError(f"unknown problem {problem!r}; expected one of {sorted(envs)}")
    return envs[problem](generator_params={"num_loc": num_loc}, **kwargs)
