"""What a training run leaves behind agrees with what it did: last.ckpt is the final state after
every epoch, at a stop mid-epoch and after an interruption; resuming from it redoes nothing; a
second run under the same name resumes or is refused; every checkpoint read runs no code."""

import csv
import json
import pickle
import shlex
from pathlib import Path

import pytest
import torch

from ho_co.cli import main
from ho_co.routing.checkpoints import convert_trusted, read_checkpoint
from ho_co.routing.train import compose, train


def curve_rows(run_dir):
    with open(Path(run_dir) / "learning_curve.csv", newline="") as f:
        return list(csv.DictReader(f))


def stored(path):
    ckpt = torch.load(path, weights_only=True)
    return ckpt["global_step"], [row["global_step"] for row in ckpt["ho_co"]["training"]["curve"]]


def test_last_checkpoint_is_the_final_epoch_even_when_it_is_not_the_best(tmp_path, smoke, tsp_files, capsys):
    inst, ref, _ = tsp_files
    # the "best" epoch is epoch 0 forever: Lightning's save_last then never rewrites last.ckpt
    result = train(compose(smoke(tmp_path, "r", "trainer.max_epochs=3", "callbacks.model_checkpoint.monitor=epoch",
                                 "callbacks.model_checkpoint.mode=min", f"callbacks.learning_curve.instances={inst}",
                                 f"callbacks.learning_curve.reference={ref}")))
    assert result["global_step"] == 12
    assert Path(result["best_checkpoint"]).name == "epoch_000.ckpt"
    assert stored(result["last_checkpoint"]) == (12, [4, 8, 12])
    files = sorted(p.name for p in Path(result["last_checkpoint"]).parent.iterdir())
    assert files == ["epoch_000.ckpt", "last.ckpt"]
    # the summary's own command reproduces both of its gaps from the files the run left
    summary = result["summary"]
    capsys.readouterr()
    assert main(shlex.split(summary["reproduce"])[1:]) == 0
    printed = capsys.readouterr().out
    again = json.loads(printed[printed.index("{"):])
    assert again["greedy_gap_percent"] == pytest.approx(summary["greedy_gap_percent"], abs=1e-6)
    assert again["mean_gap_percent"] == pytest.approx(summary["augmented_gap_percent"], abs=1e-6)


def test_a_stop_mid_epoch_is_in_last_ckpt_and_resuming_redoes_nothing(tmp_path, smoke):
    result = train(compose(smoke(tmp_path, "r", "trainer.max_epochs=3", "+trainer.max_steps=6")))
    assert result["global_step"] == 6 and stored(result["last_checkpoint"]) == (6, [4])
    resumed = train(compose(smoke(tmp_path, "r", "trainer.max_epochs=3", "ckpt_path=last")))
    rows = curve_rows(resumed["output_dir"])
    steps = [int(r["global_step"]) for r in rows]
    assert steps[0] == 4 and steps[-1] == resumed["global_step"] > 6  # the stored row kept, then onwards
    assert all(int(r["instances_seen"]) == 8 * int(r["global_step"]) for r in rows)  # batch 8: none redone


def test_an_interrupted_run_keeps_its_state_and_says_how_to_resume(tmp_path, smoke, rank_zero_log):
    with pytest.raises(SystemExit):  # Lightning's answer to Ctrl-C
        train(compose(smoke(tmp_path, "r", "trainer.max_epochs=3", "+callbacks.stop._target_=run_probes.InterruptAt",
                            "+callbacks.stop.step=6")))
    last = tmp_path / "r" / "checkpoints" / "last.ckpt"
    assert stored(last) == (6, [4])
    assert f"ckpt_path={last}" in rank_zero_log.text
    resumed = train(compose(smoke(tmp_path, "r", "trainer.max_epochs=2", "ckpt_path=last")))
    assert resumed["global_step"] == 8
    assert [int(r["global_step"]) for r in curve_rows(resumed["output_dir"])] == [4, 8]


def test_the_same_run_name_twice_is_refused_without_ckpt_path(tmp_path, smoke, capsys):
    first = train(compose(smoke(tmp_path, "r", "trainer.max_epochs=1")))
    before = Path(first["output_dir"], "learning_curve.csv").read_text()
    assert main(["train", *smoke(tmp_path, "r", "trainer.max_epochs=2")]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "ckpt_path=last" in err and "Traceback" not in err
    assert Path(first["output_dir"], "learning_curve.csv").read_text() == before
    assert sorted(p.name for p in Path(first["output_dir"], "checkpoints").iterdir())[-1] == "last.ckpt"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_damaged_checkpoint_is_one_line_everywhere_it_is_read(tsp_run, tsp_files, smoke, tmp_path, capsys, damage):
    result, _ = tsp_run
    inst, ref, _ = tsp_files
    good = Path(result["last_checkpoint"]).read_bytes()
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes({"truncate": good[: len(good) // 2], "garbage": b"not a checkpoint" * 50, "empty": b""}[damage])
    commands = [
        ["eval", "--checkpoint", str(bad), "--instances", str(inst)],
        ["checkpoint", "export", str(bad), str(tmp_path / "out.ckpt")],
        ["train", *smoke(tmp_path, "resume", "trainer.max_epochs=3", f"ckpt_path={bad}")],
        ["train", *smoke(tmp_path, "warm", "trainer.max_epochs=1", f"model.policy.init_from={bad}")],
    ]
    for command in commands:
        assert main(command) == 2, command
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1 and str(bad) in errors[0] and "Traceback" not in err, err
    assert not (tmp_path / "out.ckpt").exists()


class _WritesAFile:
    """Unpickling this object creates a file: what a malicious checkpoint could do."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_a_checkpoint_that_needs_pickle_is_refused_and_runs_nothing(tsp_run, tsp_files, tmp_path, capsys):
    result, _ = tsp_run
    inst, _, _ = tsp_files
    ckpt = torch.load(result["last_checkpoint"], weights_only=True)
    ckpt["hyper_parameters"]["payload"] = _WritesAFile(tmp_path / "pwned")
    evil = tmp_path / "evil.ckpt"
    torch.save(ckpt, evil, pickle_module=pickle)
    for command in (["eval", "--checkpoint", str(evil), "--instances", str(inst)],
                    ["checkpoint", "export", str(evil), str(tmp_path / "out.ckpt")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "pickle" in err and "checkpoint convert --trust" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="pickle"):
        read_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()


def test_a_trusted_old_checkpoint_converts_once_into_plain_data(tsp_run, tsp_files, tmp_path, capsys):
    from omegaconf import OmegaConf

    result, _ = tsp_run
    inst, ref, _ = tsp_files
    ckpt = torch.load(result["last_checkpoint"], weights_only=True)
    ckpt["ho_co"]["config"] = OmegaConf.create(ckpt["ho_co"]["config"])  # what older files stored
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    with pytest.raises(ValueError, match="pickle"):
        read_checkpoint(old)
    assert main(["checkpoint", "convert", str(old), str(tmp_path / "new.ckpt")]) == 2
    assert "--trust" in capsys.readouterr().err
    assert main(["checkpoint", "convert", "--trust", str(old), str(tmp_path / "new.ckpt")]) == 0
    new = read_checkpoint(tmp_path / "new.ckpt")
    assert isinstance(new["ho_co"]["config"], dict)
    assert main(["eval", "--checkpoint", str(tmp_path / "new.ckpt"), "--instances", str(inst),
                 "--reference", str(ref)]) == 0
    with pytest.raises(ValueError, match="not plain data"):
        ckpt["ho_co"]["config"] = {"x": object()}
        torch.save(ckpt, old)
        convert_trusted(old, tmp_path / "never.ckpt")


def test_models_compared_under_one_seed_train_on_the_same_instances(tmp_path, smoke):
    from run_probes import SEEN

    for name, model in (("ho", "model=ho_matnet"), ("plain", "model=matnet")):
        train(compose(smoke(tmp_path, name, model, "trainer.max_epochs=2", "+callbacks.rec._target_=run_probes.RecordBatches",
                            f"+callbacks.rec.key={name}")))
    assert len(SEEN["ho"]) == len(SEEN["plain"]) == 8
    assert all(torch.equal(a, b) for a, b in zip(SEEN["ho"], SEEN["plain"]))
    assert not torch.equal(SEEN["ho"][0], SEEN["ho"][4])  # a fresh draw each epoch


def test_a_run_resumed_at_an_epoch_boundary_is_the_same_run(tmp_path, smoke):
    whole = train(compose(smoke(tmp_path, "whole", "trainer.max_epochs=3")))
    train(compose(smoke(tmp_path, "split", "trainer.max_epochs=1")))
    split = train(compose(smoke(tmp_path, "split", "trainer.max_epochs=3", "ckpt_path=last")))
    a = torch.load(whole["last_checkpoint"], weights_only=True)
    b = torch.load(split["last_checkpoint"], weights_only=True)
    assert a["global_step"] == b["global_step"] == 12
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)
