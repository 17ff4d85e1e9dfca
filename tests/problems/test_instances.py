"""Instance generation and files: deterministic sets, round trips, and every bad input rejected
with the file and the problem named (TSPLIB files: test_tsplib.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from ho_co.problems.files import load_instances, save_instances
from ho_co.problems.instances import Instances, generate_atsp, generate_tsp


def test_generate_tsp_is_deterministic_uniform_float32():
    a, b = generate_tsp(20, 8, seed=5), generate_tsp(20, 8, seed=5)
    assert a.shape == (8, 20, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, generate_tsp(20, 8, seed=6))
    assert a.min() >= 0 and a.max() < 1


def test_generate_tsp_follows_kool_recipe():
    # Kool et al.'s generate_data.py: np.random.seed(seed); np.random.uniform(size=(B, N, 2))
    np.random.seed(1234)
    expected = np.random.uniform(size=(16, 50, 2))
    np.testing.assert_allclose(generate_tsp(50, 16, seed=1234), expected, rtol=1e-7)


@pytest.mark.parametrize("generate", ["matnet", "rl4co"])
def test_generate_atsp_is_deterministic_tmat_and_leaves_torch_rng_alone(generate):
    from ho_co.problems.instances import generate_atsp_rl4co

    make = {"matnet": generate_atsp, "rl4co": generate_atsp_rl4co}[generate]
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a = make(10, 4, seed=2)
    after = torch.rand(1)
    assert torch.equal(before, after)  # the global torch RNG was not advanced
    np.testing.assert_array_equal(a, make(10, 4, seed=2))
    assert a.shape == (4, 10, 10) and a.dtype == np.float32
    assert np.all(np.diagonal(a, axis1=1, axis2=2) == 0)
    assert not np.allclose(a, a.transpose(0, 2, 1))  # asymmetric
    # tmat class: closed under the triangle inequality, c(i, j) <= c(i, k) + c(k, j)
    via = a[:, :, :, None] + a[:, None, :, :]  # [b, i, k, j]
    assert np.all(a <= via.min(axis=2) + 1e-6)


def test_generate_atsp_is_matnets_integer_class():
    """MatNet's ATSProblemDef: integer costs in [0, 10^6), closed under shortest paths, / 10^6."""
    from ho_co.problems.instances import shortest_path_closure

    a = generate_atsp(12, 50, seed=3).astype(np.float64)
    units = a * 1e6
    np.testing.assert_allclose(units, np.rint(units), atol=0.05)  # whole numbers of 10^-6
    assert a.max() < 1
    # the closure is a fixpoint: one more relaxation round changes nothing
    np.testing.assert_array_equal(shortest_path_closure(np.rint(units).astype(np.int64)), np.rint(units))
    # it shortens what a cheaper two-arc path beats: here 5 -> 1 + 1
    raw = np.array([[[0, 5, 1], [1, 0, 9], [9, 1, 0]]])
    np.testing.assert_array_equal(shortest_path_closure(raw), [[[0, 2, 1], [1, 0, 2], [2, 1, 0]]])


def test_matnet_and_rl4co_atsp_generators_agree_in_distribution():
    """Training draws rl4co's continuous tmat class, the shipped sets MatNet's integer one: the
    same distribution of costs (mean, spread, quantiles) up to sampling noise."""
    from ho_co.problems.instances import generate_atsp_rl4co

    off = ~np.eye(20, dtype=bool)
    matnet, rl4co = generate_atsp(20, 1500, seed=1)[:, off], generate_atsp_rl4co(20, 1500, seed=1)[:, off]
    assert matnet.mean() == pytest.approx(rl4co.mean(), rel=0.01)
    assert matnet.std() == pytest.approx(rl4co.std(), rel=0.01)
    np.testing.assert_allclose(np.quantile(matnet, [0.1, 0.5, 0.9]), np.quantile(rl4co, [0.1, 0.5, 0.9]), rtol=0.02)
    # and the sizes differ as they should: a generator drawing [0, 1) without the closure would not
    assert matnet.mean() < 0.2


def test_npz_round_trip_and_cost_matrix(tmp_path):
    locs = generate_tsp(6, 3, seed=0)
    inst = load_instances(save_instances(tmp_path / "t.npz", locs=locs), problem="tsp", num_loc=6)
    assert inst.problem == "tsp" and len(inst) == 3 and inst.num_loc == 6
    np.testing.assert_array_equal(inst.locs, locs)
    d = np.linalg.norm(locs[1, 2] - locs[1, 4])
    assert inst.cost_matrix.shape == (3, 6, 6)
    assert inst.cost_matrix[1, 2, 4] == pytest.approx(d, rel=1e-6)

    cost = generate_atsp(5, 2, seed=0)
    inst = load_instances(save_instances(tmp_path / "a.npz", cost_matrix=cost))
    assert inst.problem == "atsp" and inst.locs is None and inst.num_loc == 5 and len(inst) == 2
    np.testing.assert_array_equal(inst.cost_matrix, cost)


def test_symmetric_cost_matrix_can_be_read_as_tsp(tmp_path):
    locs = generate_tsp(5, 2, seed=1)
    cost = Instances("tsp", locs=locs).cost_matrix
    np.savez(tmp_path / "m.npz", cost_matrix=cost)
    inst = load_instances(tmp_path / "m.npz", problem="tsp")
    assert inst.problem == "tsp" and inst.locs is None


def _npz(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


BAD_NPZ = {
    "missing keys": (dict(coords=np.zeros((2, 5, 2))), "no 'locs'"),
    "locs shape": (dict(locs=np.zeros((2, 5, 3))), r"\[B, N, 2\]"),
    "cost shape": (dict(cost_matrix=np.zeros((2, 5, 4))), r"\[B, N, N\]"),
    "NaN locs": (dict(locs=np.where(np.arange(20).reshape(2, 5, 2) == 13, np.nan, 0.5)),
                 "instance 1 has NaN or inf"),
    "inf cost": (dict(cost_matrix=np.where(np.eye(4)[None] == 1, 0, np.inf).repeat(2, 0)),
                 "instance 0 has NaN or inf"),
    "negative cost": (dict(cost_matrix=np.stack([np.ones((4, 4)), -np.ones((4, 4))])),
                      "instance 1 has negative"),
    "non-zero diagonal": (dict(cost_matrix=np.stack([1 - np.eye(4), np.ones((4, 4))])),
                          r"instance 1 has a non-zero diagonal \(entry \[0, 0\] = 1\)"),
    "too few nodes": (dict(locs=np.zeros((2, 2, 2))), "at least 3"),
    "empty": (dict(locs=np.zeros((0, 5, 2))), "no instances"),
    "strings": (dict(locs=np.array([["a"]])), "numeric"),
    "both keys": (dict(locs=np.zeros((2, 5, 2)), cost_matrix=np.ones((2, 5, 5))),
                  "both 'locs' and 'cost_matrix'"),
}


@pytest.mark.parametrize("case", BAD_NPZ)
def test_bad_npz_names_file_and_problem(tmp_path, case):
    arrays, message = BAD_NPZ[case]
    path = _npz(tmp_path, **arrays)
    with pytest.raises(ValueError, match=message) as err:
        load_instances(path)
    assert "bad.npz" in str(err.value)


def test_mismatches_are_errors(tmp_path):
    path = save_instances(tmp_path / "t.npz", locs=generate_tsp(6, 2, seed=0))
    with pytest.raises(ValueError, match="N=6 nodes, expected num_loc=20"):
        load_instances(path, num_loc=20)
    with pytest.raises(ValueError, match="holds TSP instances, expected ATSP"):
        load_instances(path, problem="atsp")
    asym = _npz(tmp_path, cost_matrix=generate_atsp(5, 2, seed=0))
    with pytest.raises(ValueError, match="instance 0 is not symmetric"):
        load_instances(asym, problem="tsp")
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_instances(tmp_path / "nope.npz")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(ValueError, match="unknown instance format"):
        load_instances(tmp_path / "x.csv")


def test_save_validates(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        save_instances(tmp_path / "t.npz")
    with pytest.raises(ValueError, match="NaN or inf"):
        save_instances(tmp_path / "t.npz", locs=np.full((1, 4, 2), np.nan))
    with pytest.raises(ValueError, match=".npz"):
        save_instances(tmp_path / "t.pkl", locs=np.zeros((1, 4, 2)))
    assert not any(tmp_path.iterdir())


def test_empty_truncated_or_foreign_npz_names_the_file(tmp_path):
    whole = save_instances(tmp_path / "whole.npz", locs=generate_tsp(6, 40, seed=0)).read_bytes()
    cases = {"empty.npz": b"", "half.npz": whole[:len(whole) // 2], "text.npz": b"hello",
             "tail.npz": whole[:-3]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match="not an .npz archive") as err:
            load_instances(tmp_path / name)
        assert str(err.value).startswith(str(tmp_path / name)) and "\n" not in str(err.value)


def _make_data(*args):
    from ho_co.cli import main

    return main(["make-data", "--problem", "tsp", *map(str, args)])


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_make_data_seed_outside_numpys_range(tmp_path, capsys, seed):
    assert _make_data("--num-loc", 5, "--size", 2, "--seed", seed, "--out", tmp_path / "m.npz") == 2
    assert "--seed" in capsys.readouterr().err and not (tmp_path / "m.npz").exists()


def test_make_data_too_few_nodes_names_the_option(tmp_path, capsys):
    assert _make_data("--num-loc", 2, "--size", 2, "--seed", 0, "--out", tmp_path / "m.npz") == 2
    assert "--num-loc must be at least 3" in capsys.readouterr().err


def test_make_data_checks_the_suffix_before_generating(tmp_path, capsys, monkeypatch):
    import ho_co.problems

    def no_work(*args):
        raise AssertionError("generated before the output was checked")

    monkeypatch.setattr(ho_co.problems, "generate_tsp", no_work)
    assert _make_data("--num-loc", 5, "--size", 2, "--seed", 0, "--out", tmp_path / "m.pkl") == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.parametrize("problem, num_loc, size", [("tsp", 1000, 10**9), ("atsp", 10**4, 10**6)])
def test_make_data_too_large_is_refused_before_allocating(tmp_path, capsys, problem, num_loc, size):
    from ho_co.cli import main

    start = time.monotonic()
    assert main(["make-data", "--problem", problem, "--num-loc", str(num_loc), "--size", str(size),
                 "--seed", "0", "--out", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert "--size" in err and "TiB" in err and "available" in err
    assert time.monotonic() - start < 5 and not (tmp_path / "m.npz").exists()


def test_make_data_does_not_replace_another_kind(tmp_path, capsys):
    from ho_co.problems import References

    refs = tmp_path / "refs.npz"
    References(np.tile(np.arange(5), (2, 1)), np.ones(2), np.ones(2, bool), np.full(2, "exact"),
               "concorde").save(refs)
    assert _make_data("--num-loc", 5, "--size", 2, "--seed", 0, "--out", refs) == 2
    assert "reference tours" in capsys.readouterr().err and References.load(refs).solver == "concorde"
    assert _make_data("--num-loc", 5, "--size", 2, "--seed", 0, "--out", refs, "--overwrite") == 0
    assert load_instances(refs).num_loc == 5
