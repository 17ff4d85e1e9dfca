import json
from pathlib import Path

import pytest

from ho_co.cli import main
from ho_co.routing.figures import plot_curves, read_curve, set_changes
from ho_co.routing.report import comparison_table, parse_labelled

CURVE = "epoch,global_step,instances_seen,wall_s,val_length,val_gap_percent\n0,10,640,60.0,6.1,7.2\n1,20,1280,120.0,5.9,3.7\n"


def eval_row(gap, length, augment=1, instances="data/tsp50_heldout.npz", num_loc=50, ref_length=5.6886,
             name=None, count=1280):
    """One file's result, with the keys `ho-co eval` writes."""
    return {
        "checkpoint": "run.ckpt", "instances": instances, "problem": "tsp", "name": name or Path(instances).stem,
        "edge_weight_type": None, "num_instances": count, "num_loc": num_loc, "num_starts": num_loc,
        "num_augment": augment, "mean_length": length, "time_per_instance_ms": 0.5, "total_seconds": 1.0,
        "device": "cpu", "valid_tours": True, "reference": "refs.npz", "reference_solver": "concorde",
        "reference_mean_length": ref_length, "reference_optimal_fraction": 1.0, "mean_gap_percent": gap,
    }


def eval_json(path, gap, length, augment=1, **kwargs):
    path.write_text(json.dumps(eval_row(gap, length, augment, **kwargs)))
    return path


def test_table_has_reference_runs_and_seed_rows(tmp_path):
    table = comparison_table({"MatNet": eval_json(tmp_path / "a.json", 1.25, 5.7597),
                              "HO-MatNet": eval_json(tmp_path / "b.json", 0.75, 5.7313, augment=8)})
    lines = table.splitlines()
    assert lines[2] == "| concorde (reference; tsp50_heldout.npz, 1280 TSP-50) | 5.6886 | 0.000 | - | - | - |"
    assert lines[3].startswith("| MatNet | 5.7597 | 1.250 | 1 |")
    assert lines[4].startswith("| HO-MatNet | 5.7313 | 0.750 | 8 |")
    assert "| HO-MatNet (seed paper) | 5.715 | 0.482 |" in table


def test_eval_without_reference_is_refused(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"mean_length": 5.0}))
    with pytest.raises(ValueError, match="without --reference"):
        comparison_table({"x": tmp_path / "x.json"})


def test_curves_png_and_cli(tmp_path, capsys):
    (tmp_path / "c.csv").write_text(CURVE)
    assert [r["val_gap_percent"] for r in read_curve(tmp_path / "c.csv")] == [7.2, 3.7]
    out = plot_curves({"HO": tmp_path / "c.csv"}, tmp_path / "c.png", x="instances_seen")
    assert out.stat().st_size > 1000
    assert main(["report", "--eval", f"HO={eval_json(tmp_path / 'e.json', 0.5, 5.7)}",
                 "--curve", f"HO={tmp_path / 'c.csv'}", "--png", str(tmp_path / "d.png")]) == 0
    printed = capsys.readouterr().out
    assert "| HO | 5.7000 | 0.500 |" in printed and (tmp_path / "d.png").is_file()
    with pytest.raises(ValueError, match="LABEL=PATH"):
        parse_labelled(["no-label"])


def test_evals_of_different_sets_get_their_own_reference_and_paper_rows_only_on_tsp50(tmp_path):
    table = comparison_table({
        "HO-50": eval_json(tmp_path / "a.json", 0.75, 5.7313),
        "HO-20": eval_json(tmp_path / "b.json", 1.4, 3.8953, instances="data/tsp20_val.npz", num_loc=20,
                           ref_length=3.8398, count=256),
        "MatNet-50": eval_json(tmp_path / "c.json", 1.25, 5.7597),
    })
    tables = [t.splitlines() for t in table.split("\n\n")]
    assert len(tables) == 2
    fifty, twenty = tables
    assert fifty[2].startswith("| concorde (reference; tsp50_heldout.npz, 1280 TSP-50) | 5.6886 |")
    assert [line.split(" | ")[0] for line in fifty[3:5]] == ["| HO-50", "| MatNet-50"]
    assert fifty[7].startswith("| HO-MatNet (seed paper) | 5.715 | 0.482 |") and len(fifty) == 8
    assert twenty[2].startswith("| concorde (reference; tsp20_val.npz, 256 TSP-20) | 3.8398 |")
    assert twenty[3].startswith("| HO-20 | 3.8953 | 1.400 |") and len(twenty) == 4  # no TSP-50 paper rows


def test_duplicate_labels_are_refused():
    with pytest.raises(ValueError, match="label 'HO' is given twice"):
        parse_labelled(["HO=a.json", "HO=b.json"])


def test_a_tsplib_directory_eval_is_one_row_of_mean_gaps(tmp_path):
    rows = [eval_row(2.0, 2100.0, instances="data/tsplib/ulysses16.tsp", num_loc=16, ref_length=6859.0, count=1),
            eval_row(4.0, 700.0, instances="data/tsplib/st70.tsp", num_loc=70, ref_length=675.0, count=1)]
    for row in rows:
        row["edge_weight_type"] = "GEO"
    path = tmp_path / "tsplib.json"
    path.write_text(json.dumps({"files": rows, "time_per_instance_ms": 0.5, "mean_gap_percent": 3.0}))
    lines = comparison_table({"HO": path}).splitlines()
    assert lines[2] == "| concorde (reference; 2 files: ulysses16, st70) | - | 0.000 | - | - | - |"
    assert lines[3] == "| HO | - | 3.000 | 1 | 0.500 | cpu |" and len(lines) == 4


def test_a_change_of_validation_set_is_found_where_it_happens():
    rows = [{"val_set": float("nan")}, {"val_set": float("nan")}, {"val_set": "tsp50_val"},
            {"val_set": "tsp50_val"}, {"val_set": "other"}]
    assert set_changes(rows) == [2, 4]
    assert set_changes([{"epoch": 0.0}, {"epoch": 1.0}]) == []  # curves without the column


def test_a_curve_without_instances_seen_is_drawn_against_time(tmp_path, capsys):
    (tmp_path / "c.csv").write_text("epoch,wall_s,val_gap_percent\n0,60.0,7.2\n1,120.0,3.7\n")
    assert main(["report", "--curve", f"HO={tmp_path / 'c.csv'}", "--png", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000
    with pytest.raises(ValueError, match=r"c.csv: no instances_seen column"):
        plot_curves({"HO": tmp_path / "c.csv"}, tmp_path / "d.png", x="instances_seen")


def test_report_without_arguments_prints_its_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report"])
    assert exit_.value.code == 2
    assert "usage: ho-co report" in capsys.readouterr().err
