import numpy as np
import pytest
import torch

from ho_co.routing.checkpoints import export_weights, pack, unpack
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


def test_pack_unpack_keeps_the_run_resumable(tsp_run, smoke, tmp_path):
    result, runs = tsp_run
    parts = pack(result["last_checkpoint"], tmp_path / "out", part_mib=1)
    assert parts and all(p.stat().st_size <= 2**20 for p in parts)
    restored = unpack(tmp_path / "out", tmp_path / "resume.ckpt")
    original = torch.load(result["last_checkpoint"], weights_only=False)
    back = torch.load(restored, weights_only=False)
    for key, value in original["state_dict"].items():
        assert torch.equal(back["state_dict"][key], value)
    for param, state in original["optimizer_states"][0]["state"].items():
        again = back["optimizer_states"][0]["state"][param]
        assert torch.equal(again["step"], state["step"])  # scalar state stays exact
        assert again["exp_avg"].dtype == torch.float32
        torch.testing.assert_close(again["exp_avg"], state["exp_avg"], rtol=1e-2, atol=1e-6)

    resumed = train(compose(smoke(runs, "tsp_unpacked", "trainer.max_epochs=3", f"ckpt_path={restored}")))
    assert resumed["global_step"] == original["global_step"] + 4


def test_unpack_refuses_missing_or_gapped_parts(tmp_path):
    with pytest.raises(FileNotFoundError, match="resume.part"):
        unpack(tmp_path, tmp_path / "x.ckpt")
    (tmp_path / "resume.part00").write_bytes(b"a")
    (tmp_path / "resume.part02").write_bytes(b"b")
    with pytest.raises(ValueError, match="not consecutive"):
        unpack(tmp_path, tmp_path / "x.ckpt")
