import csv
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ho_co.cli import main
from ho_co.routing.train import compose, config_dir, experiments, train

REPO = Path(__file__).resolve().parents[2]


def curve(run_dir):
    with open(Path(run_dir) / "learning_curve.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_configs_found_and_all_experiments_compose():
    assert config_dir() == REPO / "configs"
    names = experiments()
    for needed in ["smoke", "tsp20_cpu", "tsp50_matnet", "tsp50_ho_matnet", "atsp50_matnet",
                   "atsp50_ho_matnet", "tsp50_ho_pomo"]:
        assert needed in names
    for name in names:
        cfg = compose([f"experiment={name}"])
        assert cfg.name == name and cfg.model.policy.name in ("matnet", "am")


@pytest.mark.parametrize("name", ["smoke", "tsp20_cpu", "tsp50_cpu_matnet", "tsp50_cpu_ho_matnet"])
def test_cpu_trainings_keep_fp32_matmuls_in_full_precision(name):
    # Under RL4COTrainer's own default ("medium") torch's CPU attention ran 8x slower on an AVX-512
    # CPU for the same output (BENCHMARKS.md); the trainer the configs build
    # must leave torch at "highest".
    from hydra.utils import instantiate

    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        cfg = compose([f"experiment={name}", "trainer.accelerator=cpu", "trainer.devices=1"])
        instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision(before)


def test_compose_errors_name_the_problem():
    with pytest.raises(ValueError, match="experiments: .*smoke"):
        compose(["experiment=does_not_exist"])


def test_smoke_tsp_trains_checkpoints_and_logs_gap(tsp_run, tsp_files):
    result, runs = tsp_run
    assert result["global_step"] == 8 and result["epoch"] == 2
    assert Path(result["last_checkpoint"]).is_file() and Path(result["best_checkpoint"]).is_file()
    rows = curve(result["output_dir"])
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert [int(r["instances_seen"]) for r in rows] == [32, 64]
    assert all(float(r["val_gap_percent"]) >= -1e-6 for r in rows)  # optimal references
    assert all(float(r["val_length"]) > 0 and float(r["wall_s"]) > 0 for r in rows)
    assert {r["val_set"] for r in rows} == {Path(tsp_files[0]).stem}  # which instances the gaps are on
    ckpt = torch.load(result["last_checkpoint"], weights_only=False)
    assert ckpt["ho_co"]["config"]["model"]["policy"]["ho"]["order"] == 2


def test_run_ends_with_a_summary_pictures_and_the_command_to_reproduce_it(tsp_run, capsys):
    result, _ = tsp_run
    summary = result["summary"]
    run_dir = Path(result["output_dir"])
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    last = curve(run_dir)[-1]
    assert summary["greedy_gap_percent"] == pytest.approx(float(last["val_gap_percent"]), abs=1e-4)
    assert summary["augmented_gap_percent"] <= summary["greedy_gap_percent"] + 1e-9
    assert summary["instances_seen"] == 64 and summary["checkpoint"] == result["last_checkpoint"]
    for picture in ("learning_curve.png", "tours.png"):
        assert (run_dir / picture).stat().st_size > 5000
    command = shlex.split(summary["reproduce"])
    assert command[:2] == ["ho-co", "eval"] and main(command[1:]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{"):])["mean_gap_percent"] == pytest.approx(summary["augmented_gap_percent"])


def test_resume_continues_the_same_run(tsp_run, smoke):
    result, runs = tsp_run
    cfg = compose(smoke(runs, "tsp", "trainer.max_epochs=3",
                                  f"ckpt_path={result['last_checkpoint']}"))
    resumed = train(cfg)
    assert resumed["global_step"] == 12 and resumed["epoch"] == 3
    rows = curve(resumed["output_dir"])
    assert [int(r["global_step"]) for r in rows] == [4, 8, 12]
    assert int(rows[-1]["instances_seen"]) == 96
    assert float(rows[-1]["wall_s"]) > float(rows[1]["wall_s"])


def test_smoke_atsp_and_am_pomo_switch(tmp_path, smoke):
    atsp = train(compose(smoke(tmp_path, "atsp", "env=atsp", "trainer.max_epochs=1")))
    assert atsp["global_step"] == 4 and Path(atsp["last_checkpoint"]).is_file()
    config = torch.load(atsp["last_checkpoint"], weights_only=True)["ho_co"]["config"]
    assert config["env"]["_target_"].endswith("ATSPMatrixEnv")
    pomo = train(compose(smoke(tmp_path, "pomo", "env=tsp", "model=ho_pomo", "trainer.max_epochs=1",
                                         "model.policy.embed_dim=16", "model.policy.num_heads=2",
                                         "model.policy.num_encoder_layers=1", "model.num_augment=0")))
    assert pomo["global_step"] == 4
    ckpt = torch.load(pomo["last_checkpoint"], weights_only=False)
    assert any(k.endswith("Wqkv.weight") for k in ckpt["state_dict"])
    assert ckpt["ho_co"]["config"]["model"]["policy"]["name"] == "am"


def test_cli_train_prints_config_and_rejects_bad_override(capsys):
    assert main(["train", "experiment=smoke", "--cfg"]) == 0
    assert "name: smoke" in capsys.readouterr().out
    assert main(["train", "experiment=nope"]) == 2
    assert "experiments:" in capsys.readouterr().err


def test_ddp_two_cpu_processes(tmp_path, smoke):
    """Lightning's own DDP (gloo on CPU), launched the way a user does it."""
    ranks_file = tmp_path / "ranks.json"
    cmd = [sys.executable, "-m", "ho_co", "train",
           *smoke(tmp_path, "ddp", "trainer.devices=2", "trainer.max_epochs=1",  # rl4co's trainer sets up DDP
                  "+callbacks.fingerprint._target_=ddp_fingerprint.RankFingerprint",
                  f"+callbacks.fingerprint.path={ranks_file}")]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{Path(__file__).parent}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = json.loads(ranks_file.read_text())
    assert ranks["world_size"] == 2
    assert [r["rank"] for r in ranks["ranks"]] == [0, 1]
    assert all(r["instances_this_epoch"] == 16 for r in ranks["ranks"])  # global batch 8 split 4 + 4
    assert ranks["ranks"][0]["seed"] != ranks["ranks"][1]["seed"]
    assert ranks["ranks"][0]["data_checksum"] != ranks["ranks"][1]["data_checksum"]
    assert [int(r["instances_seen"]) for r in curve(tmp_path / "ddp")] == [32]


def test_matnet_too_narrow_for_n_is_a_clear_error(tmp_path, smoke, capsys):
    overrides = smoke(tmp_path, "narrow", "model.policy.embed_dim=4")
    assert main(["train", *overrides]) == 2
    assert "takes at most embed_dim" in capsys.readouterr().err


@pytest.mark.parametrize("order, says", [
    ("0", "HO order must be an integer >= 1, got order=0"),
    ("2.5", "HO order must be an integer >= 1, got order=2.5"),
    ("17", "HO order 17 is wider than encoder.layers.0.MHA.row_encoding_block.Wq (in_features=16)"),
])
def test_an_ho_order_that_does_not_fit_stops_before_training(tmp_path, smoke, capsys, order, says):
    assert main(["train", *smoke(tmp_path, "order", f"model.policy.ho.order={order}")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"ho-co train: error: model: {says}")
    assert not (tmp_path / "order" / "checkpoints").exists()


@pytest.mark.parametrize("override, says", [
    ("trainer.max_epochs=abc", "trainer.max_epochs=abc: expected a number, like the default 2"),
    ("env.generator_params.num_loc=2", "env.generator_params.num_loc=2: a tour needs at least 3 nodes"),
    pytest.param("trainer.accelerator=gpu", "trainer: No supported gpu backend found!",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")),
])
def test_bad_settings_stop_before_training_in_one_line(tmp_path, smoke, capsys, override, says):
    assert main(["train", *smoke(tmp_path, "bad", override)]) == 2
    assert says in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_a_bare_train_asks_for_an_experiment(capsys):
    assert main(["train"]) == 2
    err = capsys.readouterr().err.strip()
    assert "ho-co train experiment=tsp20_cpu" in err and "smoke" in err and len(err.splitlines()) == 1


def test_a_smoke_run_prints_no_third_party_tips_or_warnings(tmp_path, smoke):
    """Lightning's litlogger tip, its torch pytree deprecation, rl4co's save_hyperparameters and
    generated-dataset notices are not the user's to act on: a run's stderr holds none of them."""
    cmd = [sys.executable, "-m", "ho_co", "train", *smoke(tmp_path, "quiet", "trainer.max_epochs=1")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for noise in ("Tip:", "litlogger", "Warning", "LeafSpec", "is an instance of `nn.Module`",
                  "Generating dataset instead"):
        assert noise not in proc.stderr, proc.stderr
    assert "Seed set to" in proc.stderr  # Lightning's own information stays


def test_convert_a_trained_matnet_then_fine_tune(tmp_path, smoke):
    plain = train(compose(smoke(tmp_path, "plain", "model=matnet", "trainer.max_epochs=1")))
    tuned = train(compose(smoke(tmp_path, "tuned", "trainer.max_epochs=1", "model.policy.ho.mode=convert",
                                f"model.policy.init_from={plain['last_checkpoint']}")))
    state = torch.load(tuned["last_checkpoint"], weights_only=True)["state_dict"]
    scales = [k for k in state if k.endswith("ho_scale")]
    assert scales and any(state[k].abs().sum() > 0 for k in scales)  # the higher orders started to grow


def _final_state(result):
    ckpt = torch.load(result["last_checkpoint"], map_location="cpu", weights_only=False)
    return ckpt["state_dict"], ckpt["optimizer_states"][0]["param_groups"][0]["lr"]


def test_a_step_schedule_added_on_resume_follows_the_absolute_epoch(tmp_path, smoke, rank_zero_log):
    """A run trained at a constant rate, resumed with a x0.1 drop at epoch 3, trains exactly as a
    run scheduled from the start (and so do a scheduled run resumed with its own state, and one
    scheduled to drop later, resumed with the drop moved to epoch 3: the config's milestones win
    over the checkpoint's); a milestone already passed applies at once."""
    base = 4e-4  # the smoke model's rate (configs/model/matnet.yaml)
    drop = ["model.lr_scheduler_kwargs.milestones=[3]", "model.lr_scheduler_kwargs.gamma=0.1"]

    def run(name, *extra):
        return train(compose(smoke(tmp_path, name, "callbacks.summary=null", *extra)))

    scheduled = run("scheduled", *drop, "trainer.max_epochs=5")
    constant = run("constant", "model.lr_scheduler=null")
    assert _final_state(constant)[1] == pytest.approx(base)
    weights_ref, rate_ref = _final_state(scheduled)
    assert rate_ref == pytest.approx(base * 0.1)
    half = run("half", *drop)
    later = run("later", "model.lr_scheduler_kwargs.milestones=[10]", "model.lr_scheduler_kwargs.gamma=0.1")
    for start in (constant, half, later):
        rank_zero_log.clear()
        resumed = run(f"resumed_{Path(start['output_dir']).name}", *drop, "trainer.max_epochs=5",
                      f"ckpt_path={start['last_checkpoint']}")
        said = "learning-rate schedule from epoch 2 on: milestones=[3], gamma=0.1 (the config's; the checkpoint had "
        assert (said + "milestones=[10], gamma=0.1)" in rank_zero_log.text) == (start is later)
        weights, rate = _final_state(resumed)
        assert rate == pytest.approx(base * 0.1)
        for name, value in weights_ref.items():
            torch.testing.assert_close(weights[name], value, rtol=0, atol=0, msg=name)
    late = run("late", "model.lr_scheduler_kwargs.milestones=[1]", "trainer.max_epochs=3",
               f"ckpt_path={constant['last_checkpoint']}")
    assert _final_state(late)[1] == pytest.approx(base * 0.1)
