"""The shipped TSP-50 checkpoints load with this code, continue as runs, and decode well."""

from pathlib import Path

import pytest

from ho_co.problems import Instances, load_instances, load_references, mean_gap
from ho_co.routing.checkpoints import is_full_checkpoint, read_checkpoint, training_record
from ho_co.routing.decode import decode
from ho_co.routing.policies import policy_from_checkpoint

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {"ho_matnet": REPO / "checkpoints/ho_matnet_tsp50.ckpt", "matnet": REPO / "checkpoints/matnet_tsp50.ckpt"}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_checkpoint_resumes_and_decodes_the_held_out_set(name):
    ckpt = read_checkpoint(SHIPPED[name])
    assert is_full_checkpoint(ckpt) and SHIPPED[name].stat().st_size < 32 * 2**20
    record = training_record(ckpt)
    assert record["instances_seen"] == record["curve"][-1]["instances_seen"] > 0
    assert (ckpt["ho_co"]["config"]["model"]["policy"]["ho"] is not None) == (name == "ho_matnet")
    policy, env, _ = policy_from_checkpoint(SHIPPED[name])
    held_out = load_instances(REPO / "data/tsp50_heldout.npz", problem="tsp")
    ref = load_references(REPO / "data/tsp50_heldout_concorde.npz", held_out)
    inst = Instances("tsp", locs=held_out.locs[:32])
    lengths = decode(policy, env, inst, batch_size=32).lengths
    assert 0 <= mean_gap(lengths, ref.lengths[:32]) < 20
