import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ho_co.cli import main
from ho_co.problems import Instances, load_instances, load_references, mean_gap, save_instances, tour_lengths
from ho_co.routing.envs import make_env
from ho_co.routing.decode import augmented_copy, decode
from ho_co.routing.evaluate import evaluate
from ho_co.routing.policies import policy_from_checkpoint


def test_eval_returns_valid_tours_and_gap(tsp_run, tsp_files, tmp_path):
    result, _ = tsp_run
    inst, ref, ref_lengths = tsp_files
    out = evaluate(result["last_checkpoint"], inst, ref, num_augment=1, json_out=tmp_path / "r.json",
                   render=tmp_path / "tours.png", progress=False)
    assert out["valid_tours"] and out["num_instances"] == 12 and out["num_starts"] == 7
    assert out["mean_length"] >= ref_lengths.mean() - 1e-9  # references are optimal
    policy, env, _ = policy_from_checkpoint(result["last_checkpoint"])
    lengths = decode(policy, env, load_instances(inst), seed=0).lengths
    assert np.isclose(out["mean_gap_percent"], mean_gap(lengths, ref_lengths))
    assert json.loads((tmp_path / "r.json").read_text())["mean_gap_percent"] == out["mean_gap_percent"]
    assert (tmp_path / "tours.png").stat().st_size > 1000
    augmented = evaluate(result["last_checkpoint"], inst, ref, num_augment=4, progress=False)
    assert augmented["greedy_gap_percent"] == out["mean_gap_percent"]  # copy 0 is the plain decode
    assert augmented["mean_gap_percent"] <= out["mean_gap_percent"] + 1e-12


def test_matnet_augmentation_repeats_the_matrix():
    env = make_env("atsp", 5)
    td = env.reset(env.generator(3))
    for k in range(4):
        assert torch.equal(augmented_copy(td, env, k, 4)["cost_matrix"], td["cost_matrix"])


def test_augmentation_never_worse_and_lengths_recomputed(tsp_run, tsp_files):
    result, _ = tsp_run
    inst = load_instances(tsp_files[0])
    policy, env, _ = policy_from_checkpoint(result["last_checkpoint"])
    tours1, len1, *_ = decode(policy, env, inst, num_augment=1, seed=5)
    four = decode(policy, env, inst, num_augment=4, seed=5)
    tours4, len4 = four.tours, four.lengths
    for tours in (tours1, tours4):
        assert sorted(tours[0].tolist()) == list(range(7))
    np.testing.assert_allclose(len1, tour_lengths(inst.cost_matrix, tours1))
    np.testing.assert_allclose(len4, tour_lengths(inst.cost_matrix, tours4))
    # copy 0 of the augmented decode is the plain decode with the same draw: never longer,
    # instance by instance, and the other draws do change something
    assert np.all(len4 <= len1)
    np.testing.assert_array_equal(four.plain_tours, tours1)  # copy 0, reported beside the best
    np.testing.assert_array_equal(four.plain_lengths, len1)
    other_draw = decode(policy, env, inst, num_augment=1, seed=6)[0]
    assert not np.array_equal(other_draw, tours1)


def test_eval_is_reproducible_with_a_seed(tsp_run, tsp_files):
    result, _ = tsp_run
    a = evaluate(result["last_checkpoint"], tsp_files[0], seed=3, progress=False)
    b = evaluate(result["last_checkpoint"], tsp_files[0], seed=3, progress=False)
    assert a["mean_length"] == b["mean_length"]


def test_matnet_decode_does_not_depend_on_batching_threads_or_order(tsp_run, tsp_files):
    """One-hot draws are seeded per instance and per copy: any batch size, thread count or order
    of the instances gives each instance the same tours."""
    result, _ = tsp_run
    inst = load_instances(tsp_files[0])
    policy, env, _ = policy_from_checkpoint(result["last_checkpoint"])
    whole = decode(policy, env, inst, num_augment=3, batch_size=256, seed=9)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        in_fives = decode(policy, env, inst, num_augment=3, batch_size=5, seed=9)
    finally:
        torch.set_num_threads(threads)
    for a, b in ((whole.tours, in_fives.tours), (whole.plain_tours, in_fives.plain_tours)):
        np.testing.assert_array_equal(a, b)
    first_half = Instances("tsp", locs=inst.locs[:6])
    np.testing.assert_array_equal(decode(policy, env, first_half, num_augment=3, batch_size=4, seed=9).tours,
                                  whole.tours[:6])
    assert not np.array_equal(decode(policy, env, inst, num_augment=3, seed=10).lengths, whole.lengths)


def test_mismatched_reference_is_refused(tsp_files, atsp_files):
    inst = load_instances(tsp_files[0])
    with pytest.raises(ValueError, match="ref.npz"):
        load_references(atsp_files[1], inst)


def test_cli_eval_errors_are_one_line(tsp_run, atsp_files, capsys):
    result, _ = tsp_run
    code = main(["eval", "--checkpoint", result["last_checkpoint"], "--instances", str(atsp_files[0])])
    assert code == 2
    err = capsys.readouterr().err
    assert "atsp.npz" in err and "Traceback" not in err
    assert main(["eval", "--checkpoint", "missing.ckpt", "--instances", str(atsp_files[0])]) == 2


def test_cli_eval_json(tsp_run, tsp_files, tmp_path, capsys):
    result, _ = tsp_run
    inst, ref, _ = tsp_files
    assert main(["eval", "--checkpoint", result["best_checkpoint"], "--instances", str(inst),
                 "--reference", str(ref), "--augment", "2", "--json", str(tmp_path / "o.json")]) == 0
    saved = json.loads((tmp_path / "o.json").read_text())
    assert saved["num_augment"] == 2 and saved["reference_solver"] == "brute-force"
    assert saved["time_per_instance_ms"] > 0


@pytest.mark.parametrize("starts", ["0", "-1", "8"])
def test_cli_eval_refuses_starts_outside_one_to_n(tsp_run, tsp_files, capsys, starts):
    result, _ = tsp_run
    code = main(["eval", "--checkpoint", result["last_checkpoint"], "--instances", str(tsp_files[0]),
                 "--starts", starts])
    assert code == 2
    assert f"--starts {starts} is outside 1..7" in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("key", ["locs", "cost_matrix"])
def test_eval_in_other_units_gives_the_same_tours(tsp_run, tsp_files, tmp_path, key):
    """The same instances x100 (coordinates, or a matrix-only file): the same tours, lengths x100."""
    result, _ = tsp_run
    inst = load_instances(tsp_files[0])
    arrays = {"locs": inst.locs.astype(np.float64), "cost_matrix": inst.cost_matrix}[key]
    unit = save_instances(tmp_path / "unit.npz", **{key: arrays})
    scaled = save_instances(tmp_path / "x100.npz", **{key: 100 * arrays})
    outs = {}
    for name, path in (("unit", unit), ("x100", scaled)):
        evaluate(result["last_checkpoint"], path, out=tmp_path / f"{name}_tours.npz", progress=False)
        outs[name] = np.load(tmp_path / f"{name}_tours.npz")
    np.testing.assert_array_equal(outs["x100"]["tours"], outs["unit"]["tours"])
    np.testing.assert_allclose(outs["x100"]["lengths"], 100 * outs["unit"]["lengths"], rtol=1e-9)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device, says", [("cuda", "--device cuda: CUDA is not available"),
                                          ("gpu", "--device gpu: not a torch device")])
def test_cli_eval_on_a_device_it_cannot_use_is_one_line(tsp_run, tsp_files, capsys, device, says):
    result, _ = tsp_run
    code = main(["eval", "--checkpoint", result["last_checkpoint"], "--instances", str(tsp_files[0]),
                 "--device", device])
    assert code == 2
    assert says in capsys.readouterr().err.strip().splitlines()[-1]


def test_eval_never_writes_over_its_inputs_nor_silently_over_other_outputs(tsp_run, tsp_files, tmp_path, capsys):
    result, _ = tsp_run
    inst, ref, _ = tsp_files
    ckpt = result["last_checkpoint"]
    kept = {p: Path(p).read_bytes() for p in (inst, ref, ckpt)}
    base = ["eval", "--checkpoint", ckpt, "--instances", str(inst), "--reference", str(ref)]
    for option, target in (("--out", ref), ("--json", inst), ("--out", ckpt), ("--render", ref)):
        assert main([*base, option, str(target), "--overwrite"]) == 2
        assert "is one of the inputs" in capsys.readouterr().err
    other_ref = tmp_path / "concorde_refs.npz"
    other_ref.write_bytes(Path(ref).read_bytes())  # a reference of the same set, not given as input
    assert main([*base, "--out", str(other_ref)]) == 2
    assert "add --overwrite" in capsys.readouterr().err
    assert other_ref.read_bytes() == Path(ref).read_bytes()
    assert main([*base, "--out", str(other_ref), "--overwrite"]) == 0
    assert load_references(other_ref, load_instances(inst)).solver.startswith("policy:")
    assert all(Path(p).read_bytes() == data for p, data in kept.items())
