"""`ho-co eval` on ATSP: a trained ATSP checkpoint decodes valid tours with MatNet's augmentation,
and every bad input is one line naming the file and the problem, with nothing written."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from brute_force import brute_force_length

from ho_co.cli import main
from ho_co.problems import generate_atsp, generate_tsp, save_instances, tour_lengths
from ho_co.problems.instances import Instances

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def atsp_run(tmp_path_factory, smoke, atsp_files):
    """One smoke HO-MatNet run on ATSP-7 (embed 16: one-hots among at most 16 positions)."""
    from ho_co.routing.train import compose, train

    runs = tmp_path_factory.mktemp("atsp_runs")
    inst, ref = atsp_files
    cfg = compose(smoke(runs, "atsp", "env=atsp", "trainer.max_epochs=1",
                        f"callbacks.learning_curve.instances={inst}", f"callbacks.learning_curve.reference={ref}"))
    return train(cfg)["last_checkpoint"]


def test_atsp_eval_gives_valid_tours_with_augmentation(atsp_run, atsp_files, tmp_path, capsys):
    inst, ref = atsp_files
    out, report = tmp_path / "tours.npz", tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", atsp_run, "--instances", str(inst), "--reference", str(ref),
                 "--augment", "4", "--out", str(out), "--json", str(report)]) == 0
    row = json.loads(report.read_text())
    assert row["problem"] == "atsp" and row["num_augment"] == 4 and row["time_per_instance_ms"] > 0
    assert 0 <= row["mean_gap_percent"] <= row["greedy_gap_percent"]  # brute force is optimal; copy 0 is one of the 4
    tours = np.load(out)["tours"]
    assert sorted(tours[0].tolist()) == list(range(7))
    cost = generate_atsp(7, 6, seed=4)  # the fixture's instances
    np.testing.assert_allclose(np.load(out)["lengths"], tour_lengths(cost.astype(np.float64), tours))


def _bad(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


BAD_ATSP = {
    "TSP coordinates": (lambda: dict(locs=generate_tsp(7, 2, seed=0)),
                        "holds TSP instances, expected ATSP \\(refused rather than read as symmetric matrices"),
    "non-square": (lambda: dict(cost_matrix=np.ones((2, 7, 6))), r"\[B, N, N\]"),
    "negative": (lambda: dict(cost_matrix=-generate_atsp(7, 2, seed=0)), "negative costs"),
    "NaN": (lambda: dict(cost_matrix=np.where(np.eye(7) == 1, 0, np.nan)[None]), "NaN or inf"),
    "non-zero diagonal": (lambda: dict(cost_matrix=generate_atsp(7, 2, seed=0) + np.eye(7, dtype=np.float32)),
                          "non-zero diagonal"),
}


@pytest.mark.parametrize("case", BAD_ATSP)
def test_bad_atsp_input_is_one_line_and_writes_nothing(atsp_run, tmp_path, capsys, case):
    arrays, message = BAD_ATSP[case]
    path = _bad(tmp_path, **arrays())
    out, report = tmp_path / "tours.npz", tmp_path / "eval.json"
    code = main(["eval", "--checkpoint", atsp_run, "--instances", str(path), "--out", str(out), "--json", str(report)])
    assert code == 2
    line = _one_line_error(capsys)
    assert "bad.npz" in line and re.search(message, line), line
    assert not out.exists() and not report.exists()


def test_atsp_file_given_to_a_tsp_policy_is_refused(tsp_run, atsp_files, capsys):
    result, _ = tsp_run
    assert main(["eval", "--checkpoint", result["last_checkpoint"], "--instances", str(atsp_files[0])]) == 2
    assert "atsp.npz: cost_matrix of instance 0 is not symmetric" in _one_line_error(capsys)


def test_more_nodes_than_the_one_hot_width_is_refused(atsp_run, tmp_path, capsys):
    path = save_instances(tmp_path / "n17.npz", cost_matrix=generate_atsp(17, 1, seed=0))
    assert main(["eval", "--checkpoint", atsp_run, "--instances", str(path)]) == 2
    line = _one_line_error(capsys)
    assert "n17.npz" in line and "17" in line and "16" in line


@pytest.mark.parametrize("augment", ["0", "-3", "two", "1.5"])
def test_augment_must_be_a_positive_integer(atsp_run, atsp_files, tmp_path, capsys, augment):
    report = tmp_path / "eval.json"
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--checkpoint", atsp_run, "--instances", str(atsp_files[0]), "--augment", augment,
              "--json", str(report)])
    assert exit_.value.code == 2 and not report.exists()
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument --augment: must be a positive integer, got '{augment}'" in last


def test_symmetric_instances_still_decode_as_atsp_matrices(atsp_run, tmp_path):
    """A symmetric cost matrix is an ATSP instance too: an ATSP checkpoint decodes it."""
    cost = Instances("tsp", locs=generate_tsp(7, 3, seed=2)).cost_matrix
    path = save_instances(tmp_path / "sym.npz", cost_matrix=cost)
    report = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", atsp_run, "--instances", str(path), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["problem"] == "atsp"


def test_augmented_per_file_table_shows_x1_beside_the_best_copy(atsp_run, tmp_path, capsys):
    """Several .atsp files with `--optima`: the table has the plain decode (x1) and the best of the
    copies (x4) per file, and the mean row averages each column over the files."""
    lines = []
    for name, seed in (("m6", 1), ("m7", 2)):
        n = int(name[1:])
        cost = np.rint(generate_atsp(n, 1, seed=seed)[0] * 1000).astype(int)
        body = "\n".join(" ".join(str(c) for c in row) for row in cost)
        (tmp_path / f"{name}.atsp").write_text(f"NAME: {name}\nTYPE: ATSP\nDIMENSION: {n}\nEDGE_WEIGHT_TYPE: EXPLICIT\n"
                                               f"EDGE_WEIGHT_FORMAT: FULL_MATRIX\nEDGE_WEIGHT_SECTION\n{body}\nEOF\n")
        lines.append(f"{name}: {brute_force_length(cost):g}")
    (tmp_path / "optima.txt").write_text("\n".join(lines) + "\n")
    report = tmp_path / "r.json"
    assert main(["eval", "--checkpoint", atsp_run, "--instances", str(tmp_path / "m6.atsp"), str(tmp_path / "m7.atsp"),
                 "--optima", str(tmp_path / "optima.txt"), "--augment", "4", "--json", str(report)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "| name | N | type | optimum | length x1 | gap x1 % | length x4 | gap x4 % | ms |" in table
    result = json.loads(report.read_text())
    for row in result["files"]:
        assert 0 <= row["mean_gap_percent"] <= row["greedy_gap_percent"] + 1e-9  # copy 0 is one of the 4
    assert result["greedy_gap_percent"] == pytest.approx(np.mean([r["greedy_gap_percent"] for r in result["files"]]))
    mean_row = next(line for line in table if line.startswith("| mean (2 files)"))
    assert f"| {result['greedy_gap_percent']:.2f} |" in mean_row and f"| {result['mean_gap_percent']:.2f} |" in mean_row
