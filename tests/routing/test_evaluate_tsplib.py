"""`ho-co eval` on TSPLIB files with a small trained policy: a normalised copy decoded, lengths
re-measured in each file's own metric, gaps from optima lists or `ho-co solve` outputs, `--out`
in `ho-co solve`'s format, and files larger than MatNet's one-hot width refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rl4co.envs import TSPEnv

from ho_co.cli import main
from ho_co.problems import load_instances, load_references, tour_lengths
from ho_co.routing.envs import make_env
from ho_co.routing.decode import generator_mean_cost, mean_cost, policy_input
from ho_co.routing.evaluate import evaluate
from ho_co.solvers import concorde

DATA = Path(__file__).resolve().parents[2] / "data" / "tsplib"


@pytest.fixture(scope="module")
def tsplib_dir(tmp_path_factory):
    """ulysses16 (GEO) and two small files (EUC_2D, EXPLICIT UPPER_ROW), with their optima."""
    d = tmp_path_factory.mktemp("tsplib")
    (d / "ulysses16.tsp").write_text((DATA / "ulysses16.tsp").read_text())
    rng = np.random.default_rng(0)
    pts = rng.integers(0, 1000, size=(12, 2))
    (d / "pts12.tsp").write_text("NAME: pts12\nTYPE: TSP\nDIMENSION: 12\nEDGE_WEIGHT_TYPE: EUC_2D\n"
                                 "NODE_COORD_SECTION\n" + "".join(f"{i + 1} {x} {y}\n" for i, (x, y) in enumerate(pts))
                                 + "EOF\n")
    m = rng.integers(1, 100, size=(9, 9))
    m = m + m.T
    upper = " ".join(str(m[i, j]) for i in range(9) for j in range(i + 1, 9))
    (d / "mat9.tsp").write_text("NAME: mat9\nTYPE: TSP\nDIMENSION: 9\nEDGE_WEIGHT_TYPE: EXPLICIT\n"
                                f"EDGE_WEIGHT_FORMAT: UPPER_ROW\nEDGE_WEIGHT_SECTION\n{upper}\nEOF\n")
    lines = []
    for f in sorted(d.glob("*.tsp")):
        inst = load_instances(f)
        best = tour_lengths(inst.cost_matrix, concorde.solve(inst.cost_matrix[0]).tour[None])[0]
        lines.append(f"{f.stem}: {best:g}")
    (d / "optima.txt").write_text("\n".join(lines) + "\n")
    return d


def test_eval_directory_against_optima_with_out(tsp_run, tsplib_dir, tmp_path, capsys):
    result, _ = tsp_run
    out = tmp_path / "policy"
    assert main(["eval", "--checkpoint", result["last_checkpoint"], "--instances", str(tsplib_dir),
                 "--optima", str(tsplib_dir / "optima.txt"), "--out", str(out), "--json",
                 str(tmp_path / "r.json")]) == 0
    table = capsys.readouterr().out
    assert "| name | N | type | optimum | length | gap % | ms |" in table.splitlines()
    assert "| ulysses16 | 16 | GEO |" in table and "| mat9 | 9 | EXPLICIT |" in table and "| mean (3 files) |" in table
    import json

    rows = json.loads((tmp_path / "r.json").read_text())["files"]
    optima = dict(line.split(": ") for line in (tsplib_dir / "optima.txt").read_text().split("\n") if line)
    for row in rows:
        inst = load_instances(row["instances"])
        # --out is `ho-co solve`'s format: the reference reader takes it, tours re-measured there
        refs = load_references(out / f"{row['name']}.npz", inst)
        assert refs.lengths[0] == tour_lengths(inst.cost_matrix, refs.tours)[0] == row["mean_length"]
        assert float(refs.lengths[0]).is_integer()  # the file's integer metric, not the normalised copy
        optimum = float(optima[row["name"]])
        assert row["reference_mean_length"] == optimum
        assert row["mean_gap_percent"] == pytest.approx(100 * (row["mean_length"] - optimum) / optimum)
        assert row["mean_gap_percent"] >= 0
    # `ho-co report` takes what this eval wrote: one row of the mean gap over the files
    assert main(["report", "--eval", f"HO={tmp_path / 'r.json'}"]) == 0
    mean_gap = json.loads((tmp_path / "r.json").read_text())["mean_gap_percent"]
    assert f"| HO | - | {mean_gap:.3f} | 1 |" in capsys.readouterr().out


def test_eval_one_file_against_solve_output_and_augmentation(tsp_run, tsplib_dir, tmp_path):
    result, _ = tsp_run
    path = tsplib_dir / "ulysses16.tsp"
    assert main(["solve", "--solver", "concorde", "--instances", str(path), "--out", str(tmp_path / "ref.npz")]) == 0
    plain = evaluate(result["last_checkpoint"], path, tmp_path / "ref.npz", render=tmp_path / "t.png",
                     render_count=1, progress=False)
    assert (tmp_path / "t.png").stat().st_size > 1000  # the file's coordinates, drawn
    augmented = evaluate(result["last_checkpoint"], path, tmp_path / "ref.npz", num_augment=4, progress=False)
    assert plain["name"] == "ulysses16" and plain["edge_weight_type"] == "GEO"
    assert plain["reference_mean_length"] == 6859 and plain["mean_gap_percent"] >= 0
    assert augmented["mean_length"] <= plain["mean_length"]


def test_file_larger_than_matnet_one_hot_is_refused(tsp_run, capsys):
    result, _ = tsp_run
    assert main(["eval", "--checkpoint", result["last_checkpoint"], "--instances", str(DATA / "gr17.tsp")]) == 2
    err = capsys.readouterr().err
    assert "gr17.tsp" in err and "N=17" in err and "embed_dim=16" in err


def test_normalised_copies_for_matrix_and_coordinate_policies():
    inst = load_instances(DATA / "st70.tsp")
    env = make_env("tsp", 70)
    cost = policy_input(inst, env)["cost_matrix"].numpy()[0]
    ratio = cost[~np.eye(70, dtype=bool)] / inst.cost_matrix[0][~np.eye(70, dtype=bool)]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)  # one scale for the whole matrix ...
    assert mean_cost(cost[None])[0] == pytest.approx(generator_mean_cost(env, 70), rel=1e-5)  # ... the generator's
    locs = policy_input(inst, TSPEnv(generator_params={"num_loc": 70}))["locs"].numpy()[0]
    assert locs.min() == 0 and locs.max() == pytest.approx(1)
    scale = np.ptp(inst.locs[0], axis=0).max()
    np.testing.assert_allclose(locs * scale + inst.locs[0].min(axis=0), inst.locs[0], rtol=1e-5)
    with pytest.raises(ValueError, match="gr17: this policy reads coordinates"):
        policy_input(load_instances(DATA / "gr17.tsp"), TSPEnv(generator_params={"num_loc": 17}))


def test_eval_directory_against_a_directory_of_solve_outputs(tsp_run, tsplib_dir, tmp_path, capsys):
    result, _ = tsp_run
    refs = tmp_path / "refs"
    assert main(["solve", "--solver", "concorde", "--instances", str(tsplib_dir), "--out", str(refs)]) == 0
    out = evaluate(result["last_checkpoint"], [tsplib_dir], refs, progress=False)
    optima = dict(line.split(": ") for line in (tsplib_dir / "optima.txt").read_text().split("\n") if line)
    assert [r["name"] for r in out["files"]] == ["mat9", "pts12", "ulysses16"]
    for row in out["files"]:
        assert row["reference_solver"] == "concorde" and row["reference_mean_length"] == float(optima[row["name"]])
    assert out["mean_gap_percent"] == pytest.approx(np.mean([r["mean_gap_percent"] for r in out["files"]]))
