"""Output checks shared by the commands: never over an input, never over another kind of file
without --overwrite, one output per input; and `ho-co checkpoint export` under those rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ho_co.cli import main
from ho_co.outputs import check_output, kind_of, per_file_outputs
from ho_co.problems import References, generate_tsp, save_instances


def _refs(path, solver):
    References(np.tile(np.arange(5), (2, 1)), np.ones(2), np.ones(2, bool), np.full(2, "x"),
               solver).save(path)
    return path


def _checkpoint(path, full=True):
    ckpt = {"state_dict": {"policy.w": torch.ones(3)}, "hyper_parameters": {"lr": 1e-3},
            "ho_co": {"config": {"env": {"name": "tsp"}}}}
    if full:
        ckpt.update(optimizer_states=[{"state": {}}], loops={}, callbacks={})
    torch.save(ckpt, path)
    return path


def test_kinds_of_existing_files(tmp_path):
    (tmp_path / "eval.json").write_text(json.dumps({"checkpoint": "c", "mean_length": 1.0}))
    (tmp_path / "other.json").write_text("[1, 2]")
    (tmp_path / "notes.txt").write_text("mine")
    files = {
        "inst.npz": save_instances(tmp_path / "inst.npz", locs=generate_tsp(5, 2, seed=0)),
        "concorde.npz": _refs(tmp_path / "concorde.npz", "concorde"),
        "policy.npz": _refs(tmp_path / "policy.npz", "policy:last.ckpt"),
        "full.ckpt": _checkpoint(tmp_path / "full.ckpt"),
        "slim.ckpt": _checkpoint(tmp_path / "slim.ckpt", full=False),
    }
    assert [kind_of(p) for p in files.values()] == [
        "instances", "reference tours", "policy tours", "training checkpoint", "weights-only checkpoint"]
    assert kind_of(tmp_path / "eval.json") == "eval JSON"
    assert kind_of(tmp_path / "other.json") == kind_of(tmp_path / "notes.txt") == "another file"
    assert kind_of(tmp_path) == "a directory" and kind_of(tmp_path / "none") is None


def test_eval_outputs_never_replace_an_input_or_another_kind(tmp_path):
    inst = save_instances(tmp_path / "inst.npz", locs=generate_tsp(5, 2, seed=0))
    ref = _refs(tmp_path / "ref.npz", "concorde")
    inputs = [inst, ref, tmp_path / "last.ckpt", None]
    for dest, kind in ((ref, "eval JSON"), (inst, "policy tours"), (tmp_path / "." / "ref.npz", "policy tours")):
        with pytest.raises(ValueError, match="is one of the inputs"):
            check_output(dest, kind, inputs=inputs, overwrite=True, option="--json")
    other = _refs(tmp_path / "other_ref.npz", "concorde")
    with pytest.raises(ValueError, match=r"--out .*other_ref.npz: holds reference tours \(concorde\).*--overwrite"):
        check_output(other, "policy tours", inputs=inputs)
    assert check_output(other, "policy tours", inputs=inputs, overwrite=True) == other
    policy = _refs(tmp_path / "policy.npz", "policy:a.ckpt")
    assert check_output(policy, "policy tours", inputs=inputs) == policy  # same kind: replaced


def test_one_output_per_input(tmp_path):
    a, b = tmp_path / "a" / "x.tsp", tmp_path / "b" / "x.npz"
    assert per_file_outputs([a], tmp_path / "r.npz") == [tmp_path / "r.npz"]
    assert per_file_outputs([a, tmp_path / "y.tsp"], tmp_path / "out") == [
        tmp_path / "out" / "x.npz", tmp_path / "out" / "y.npz"]
    with pytest.raises(ValueError, match=f"{a} and {b} would both write"):
        per_file_outputs([a, b], tmp_path / "out")


def test_checkpoint_export_never_destroys_its_source(tmp_path, capsys):
    src = _checkpoint(tmp_path / "last.ckpt")
    before = src.read_bytes()
    assert main(["checkpoint", "export", str(src), str(src)]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert main(["checkpoint", "export", str(src), str(tmp_path / "." / "last.ckpt"), "--overwrite"]) == 2
    assert src.read_bytes() == before


def test_checkpoint_export_over_a_training_checkpoint_needs_overwrite(tmp_path, capsys):
    src, other = _checkpoint(tmp_path / "last.ckpt"), _checkpoint(tmp_path / "epoch3.ckpt")
    assert main(["checkpoint", "export", str(src), str(other)]) == 2
    err = capsys.readouterr().err
    assert "epoch3.ckpt: holds a training checkpoint" in err and "--overwrite" in err
    assert "optimizer_states" in torch.load(other, weights_only=False)
    slim = tmp_path / "slim.ckpt"
    assert main(["checkpoint", "export", str(src), str(slim)]) == 0
    assert main(["checkpoint", "export", str(src), str(slim)]) == 0  # same kind: replaced
    assert main(["checkpoint", "export", str(src), str(other), "--overwrite"]) == 0
    assert "optimizer_states" not in torch.load(other, weights_only=False)
