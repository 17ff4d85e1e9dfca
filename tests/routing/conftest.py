"""Shared fixtures for the routing tests: tiny instance files, exact references, one trained
smoke checkpoint reused by the eval tests (training is the slow part)."""

from __future__ import annotations

import logging

import pytest
import torch

from brute_force import brute_force_reference
from ho_co.problems import generate_atsp, generate_tsp, load_instances, save_instances

N = 7  # brute force: 6! = 720 tours per instance


@pytest.fixture(scope="session")
def tsp_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tsp")
    locs = generate_tsp(N, 12, seed=3)
    inst = save_instances(d / "tsp.npz", locs=locs)
    ref = brute_force_reference(d / "ref.npz", load_instances(inst))
    return inst, d / "ref.npz", ref


@pytest.fixture(scope="session")
def atsp_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("atsp")
    cost = generate_atsp(N, 6, seed=4)
    inst = save_instances(d / "atsp.npz", cost_matrix=cost)
    brute_force_reference(d / "ref.npz", load_instances(inst))
    return inst, d / "ref.npz"


def smoke_overrides(runs_dir, name, *extra):
    return ["experiment=smoke", f"paths.runs_dir={runs_dir}", f"name={name}",
            f"env.generator_params.num_loc={N}", "callbacks.rich_progress_bar=null", *extra]


@pytest.fixture(scope="session")
def smoke():
    """Overrides of a smoke run: `smoke(runs_dir, name, *extra)`."""
    return smoke_overrides


@pytest.fixture(scope="session")
def tsp_run(tmp_path_factory, tsp_files):
    """One smoke HO-MatNet run on TSP-7 with the reference gap in validation."""
    from ho_co.routing.train import compose, train

    runs = tmp_path_factory.mktemp("runs")
    inst, ref, _ = tsp_files
    cfg = compose(smoke_overrides(runs, "tsp", f"callbacks.learning_curve.instances={inst}",
                                  f"callbacks.learning_curve.reference={ref}"))
    return train(cfg), runs


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: on a loaded 2-core box, thread hand-offs cost more than the work (~50x).
    A module asks for it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def rank_zero_log(caplog):
    """caplog holding what the callbacks said through Lightning's `rank_zero_info`. Lightning's
    logger stops propagating to the root logger (caplog's) when the root had no handler as
    Lightning was imported, so caplog's handler also listens on it directly."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    caplog.set_level(logging.INFO, logger=logger.name)
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)
