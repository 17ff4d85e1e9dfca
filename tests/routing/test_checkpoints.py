import numpy as np
import pytest
import torch

from ho_co.cli import main
from ho_co.routing.checkpoints import export_weights
from ho_co.routing.evaluate import evaluate
from ho_co.routing.train import compose, train


def test_exported_weights_evaluate_like_the_training_checkpoint(tsp_run, tsp_files, tmp_path):
    result, _ = tsp_run
    inst, ref, _ = tsp_files
    full = evaluate(result["last_checkpoint"], inst, ref, progress=False)
    exact = export_weights(result["last_checkpoint"], tmp_path / "w32.ckpt", dtype=torch.float32)
    assert "optimizer_states" not in torch.load(exact, weights_only=False)
    assert evaluate(exact, inst, ref, progress=False)["mean_length"] == pytest.approx(full["mean_length"], rel=1e-6)

    small = export_weights(result["last_checkpoint"], tmp_path / "w16.ckpt")
    assert small.stat().st_size < exact.stat().st_size
    state = torch.load(small, weights_only=False)["state_dict"]
    assert all(v.dtype == torch.bfloat16 for v in state.values() if v.is_floating_point())
    out = evaluate(small, inst, ref, progress=False)
    assert out["valid_tours"] and np.isfinite(out["mean_gap_percent"])


def test_export_keeps_the_learning_curve_and_warm_starts_a_new_run(tsp_run, tsp_files, smoke, tmp_path):
    result, runs = tsp_run
    inst, ref, _ = tsp_files
    shipped = export_weights(result["last_checkpoint"], tmp_path / "shipped.ckpt")
    record = torch.load(shipped, weights_only=False)["ho_co"]["training"]
    assert record == torch.load(result["last_checkpoint"], weights_only=False)["ho_co"]["training"]
    seen = [row["instances_seen"] for row in record["curve"]]
    assert seen == [32 * (i + 1) for i in range(len(seen))] and record["instances_seen"] == seen[-1]
    assert record["curve"][-1]["device"] == "cpu" and record["wall_s"] > 0

    warm = train(compose(smoke(tmp_path, "warm", "trainer.max_epochs=1", f"model.policy.init_from={shipped}",
                               f"callbacks.learning_curve.instances={inst}",
                               f"callbacks.learning_curve.reference={ref}")))
    assert warm["global_step"] == 4  # a new run: fresh loop and optimizer ...
    ckpt = torch.load(warm["last_checkpoint"], weights_only=False)
    assert all(int(s["step"]) == 4 for s in ckpt["optimizer_states"][0]["state"].values())
    curve = ckpt["ho_co"]["training"]["curve"]  # ... that carries on the weights' learning curve
    assert curve[:-1] == record["curve"] and curve[-1]["instances_seen"] == seen[-1] + 32
    assert curve[-1]["wall_s"] > record["wall_s"]


def test_warm_start_must_fit_the_architecture(tsp_run, smoke, tmp_path, capsys):
    result, _ = tsp_run
    assert main(["train", *smoke(tmp_path, "plain", "model=matnet", "trainer.max_epochs=1",
                                 f"model.policy.init_from={result['last_checkpoint']}")]) == 2
    err = capsys.readouterr().err
    assert "model: " in err and "trained with ho={'order': 2" in err and "Traceback" not in err
