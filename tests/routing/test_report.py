import json

import pytest

from ho_co.cli import main
from ho_co.routing.report import comparison_table, parse_labelled, plot_curves, read_curve

CURVE = "epoch,global_step,instances_seen,wall_s,val_length,val_gap_percent\n0,10,640,60.0,6.1,7.2\n1,20,1280,120.0,5.9,3.7\n"


def eval_json(path, gap, length, augment=1):
    path.write_text(json.dumps({
        "mean_length": length, "mean_gap_percent": gap, "num_augment": augment, "time_per_instance_ms": 0.5,
        "device": "cpu", "reference_solver": "concorde", "reference_mean_length": 5.6886,
    }))
    return path


def test_table_has_reference_runs_and_seed_rows(tmp_path):
    table = comparison_table({"MatNet": eval_json(tmp_path / "a.json", 1.25, 5.7597),
                              "HO-MatNet": eval_json(tmp_path / "b.json", 0.75, 5.7313, augment=8)})
    lines = table.splitlines()
    assert lines[2] == "| concorde (reference) | 5.6886 | 0.000 | - | - | - |"
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
