"""The shipped checkpoints load with this code, continue as runs, and decode their test sets well;
each pair holds the state after the same number of instances, and its curve is the one in
benchmarks/results."""

from pathlib import Path

import numpy as np
import pytest

from ho_co.problems import Instances, load_instances, load_references, mean_gap
from ho_co.routing.checkpoints import is_full_checkpoint, read_checkpoint, training_record
from ho_co.routing.decode import decode
from ho_co.routing.figures import read_curve
from ho_co.routing.policies import policy_from_checkpoint

REPO = Path(__file__).resolve().parents[2]
# problem and size -> (test set, the largest greedy gap % on its first 32 instances a shipped model may show)
PAIRS = {("tsp", 50): ("tsp50_heldout", 20), ("atsp", 20): ("atsp20_heldout", 20), ("atsp", 50): ("atsp50_heldout", 40)}
SHIPPED = [(model, problem, n) for problem, n in PAIRS for model in ("ho_matnet", "matnet")]


def shipped_file(model: str, problem: str, n: int) -> Path:
    return REPO / f"checkpoints/{model}_{problem}{n}.ckpt"


@pytest.mark.parametrize("model,problem,n", SHIPPED)
def test_a_shipped_checkpoint_resumes_and_decodes_its_test_set(model, problem, n):
    path = shipped_file(model, problem, n)
    ckpt = read_checkpoint(path)
    assert is_full_checkpoint(ckpt) and path.stat().st_size < 32 * 2**20
    record = training_record(ckpt)
    assert record["instances_seen"] == record["curve"][-1]["instances_seen"] > 0
    assert (ckpt["ho_co"]["config"]["model"]["policy"]["ho"] is not None) == (model == "ho_matnet")
    policy, env, _ = policy_from_checkpoint(path)
    test_set, largest_gap = PAIRS[problem, n]
    held_out = load_instances(REPO / f"data/{test_set}.npz", problem=problem)
    ref = load_references(REPO / f"data/{test_set}_concorde.npz", held_out)
    inst = (Instances("tsp", locs=held_out.locs[:32]) if problem == "tsp"
            else Instances("atsp", cost_matrix=held_out.cost_matrix[:32]))
    lengths = decode(policy, env, inst, batch_size=32).lengths
    assert 0 <= mean_gap(lengths, ref.lengths[:32]) < largest_gap


@pytest.mark.parametrize("problem,n", [key for key in PAIRS if key[0] == "atsp"])
def test_a_shipped_atsp_pair_saw_the_same_instances_and_ships_its_curves(problem, n):
    records = {m: training_record(read_checkpoint(shipped_file(m, problem, n))) for m in ("ho_matnet", "matnet")}
    assert records["ho_matnet"]["instances_seen"] == records["matnet"]["instances_seen"]
    for model, record in records.items():
        shipped_curve = read_curve(REPO / f"benchmarks/results/{problem}{n}_cpu/{model}_learning_curve.csv")
        assert len(shipped_curve) == len(record["curve"])
        assert shipped_curve[-1]["val_set"] == f"{problem}{n}_val"
        np.testing.assert_allclose([r["val_gap_percent"] for r in shipped_curve],
                                   [r["val_gap_percent"] for r in record["curve"]], rtol=1e-6)
