"""benchmarks/ho_study.py end to end at smoke size: every run trains, the table and the plot are
written, and a second call reuses the finished runs instead of training again."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.policy.embed_dim=16", "model.policy.num_encoder_layers=1", "model.policy.num_heads=2",
        "model.policy.feedforward_hidden=16", "model.batch_size=8", "model.train_data_size=16",
        "model.val_batch_size=8", "model.val_data_size=8", "trainer.max_epochs=1", "callbacks.rich_progress_bar=null",
        "callbacks.summary.tours_to_draw=0", "callbacks.learning_curve.plot_file=null", "logger=[]"]


def load_study():
    spec = importlib.util.spec_from_file_location("ho_study", REPO / "benchmarks" / "ho_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_study_runs_tables_plots_and_resumes(tmp_path, tsp_files):
    study = load_study()
    inst, ref, _ = tsp_files
    num_loc = len(np.load(inst)["locs"][0])
    extra = [*TINY, f"env.generator_params.num_loc={num_loc}", f"callbacks.learning_curve.instances={inst}",
             f"callbacks.learning_curve.reference={ref}"]
    argv = ["--out", str(tmp_path), "--placements", "none", "all", "--orders", "4", "--seeds", "7", "--", *extra]
    result = study.main(argv)
    rows = {r["name"]: r for r in result["rows"]}
    assert sorted(rows) == ["matnet-all-k4-s7", "matnet-none-s7", "pomo-all-k4-s7", "pomo-none-s7"]
    for name, row in rows.items():
        assert row["instances_seen"] == 16 and row["num_augment"] == 8
        assert row["augmented_gap_percent"] <= row["greedy_gap_percent"] + 1e-9 and row["greedy_gap_percent"] >= -1e-6
        assert row["train_wall_s"] > 0
        assert json.loads((tmp_path / name / "study.json").read_text()) == row
    config = (tmp_path / "pomo-all-k4-s7" / "config.yaml").read_text()
    assert "order: 4" in config and "- all" in config and "seed: 7" in config
    assert "ho: null" in (tmp_path / "matnet-none-s7" / "config.yaml").read_text()

    lines = {(l["model"], l["setting"]): l for l in result["lines"]}
    assert lines["matnet", "none"]["wall_ratio"] == pytest.approx(1.0)
    assert lines["pomo", "all-k4"]["wall_ratio"] == pytest.approx(
        rows["pomo-all-k4-s7"]["train_wall_s"] / rows["pomo-none-s7"]["train_wall_s"])
    assert lines["pomo", "all-k4"]["greedy"][0] == pytest.approx(rows["pomo-all-k4-s7"]["greedy_gap_percent"])
    assert math.isnan(lines["pomo", "all-k4"]["greedy"][1])  # one seed: no spread
    text = result["table"].read_text()
    assert "| matnet | all-k4 | 1 |" in text and "x8 augmentation gap" in text
    assert result["plot"].stat().st_size > 5000

    (tmp_path / "matnet-none-s7" / "checkpoints").rename(tmp_path / "kept")  # a rerun would rebuild it
    again = study.main(argv)
    assert again["rows"] == result["rows"] and not (tmp_path / "matnet-none-s7" / "checkpoints").exists()

    (tmp_path / "pomo-all-k4-s7" / "study.json").unlink()  # as if that run had not finished
    part = study.main([*argv[:-len(extra) - 1], "--finished-only"])
    assert [r["name"] for r in part["rows"]] == ["matnet-none-s7", "matnet-all-k4-s7", "pomo-none-s7"]
    assert "| pomo | all-k4 |" not in part["table"].read_text()
    assert not (tmp_path / "pomo-all-k4-s7" / "study.json").exists()  # nothing was trained


def test_runs_with_different_training_budgets_are_not_tabled():
    study = load_study()
    rows = [{"model": "matnet", "setting": s, "placement": s, "instances_seen": n, "train_wall_s": 1.0,
             "greedy_gap_percent": 1.0, "augmented_gap_percent": 1.0, "num_augment": 8}
            for s, n in (("none", 64), ("all-k2", 32))]
    with pytest.raises(ValueError, match=r"different numbers of training instances \(\[32, 64\]\)"):
        study.table(rows)
