import csv
import json

import pytest
from transformers import AutoTokenizer

from ho_co import HOLinear
from ho_co.llm.data import DataError
from ho_co.llm.pretrain import PretrainConfig, build_model, pretrain, token_blocks


def tiny(text_file, tmp_path, **kw):
    base = dict(text=str(text_file), output=str(tmp_path / "run"), orders=[1, 2], vocab_size=300,
                n_embd=32, n_layer=1, n_head=2, block_size=32, batch_size=4, max_steps=4, eval_steps=2,
                use_cpu=True)
    return PretrainConfig(**{**base, **kw})


def test_variants_share_init_and_differ_only_in_the_operator(text_file, tmp_path):
    config = tiny(text_file, tmp_path, orders=[1, 4])
    baseline, ho = build_model(config, 300, 1), build_model(config, 300, 4)
    layers = [m for m in ho.modules() if isinstance(m, HOLinear)]
    assert len(layers) == 4 and all(m.order == 4 and m.ho_scale is None for m in layers)  # exact operator
    assert not any(isinstance(m, HOLinear) for m in baseline.modules())
    conv = baseline.transformer.h[0].attn.c_attn
    assert (ho.transformer.h[0].attn.c_attn.weight == conv.weight.t()).all()  # same initial weights


def test_pretrain_writes_curves_plot_and_resumes(text_file, tmp_path):
    config = tiny(text_file, tmp_path)
    summary = pretrain(config)
    run = tmp_path / "run"
    assert (run / "loss_curves.png").stat().st_size > 1000
    with open(run / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    val = {(int(r["order"]), int(r["step"])) for r in rows if r["split"] == "validation"}
    assert val == {(k, s) for k in (1, 2) for s in (0, 2, 4)}
    assert set(summary["final_val_loss"]) == {1, 2}
    assert json.loads((run / "summary.json").read_text())["config"]["orders"] == [1, 2]
    first = {int(r["order"]): float(r["loss"]) for r in rows if r["split"] == "validation" and r["step"] == "0"}
    for order in (1, 2):  # training lowered the validation loss
        assert summary["final_val_loss"][order] < first[order]

    resumed = pretrain(tiny(text_file, tmp_path, max_steps=6, resume=True))
    with open(run / "curves.csv") as f:
        steps = {int(r["step"]) for r in csv.DictReader(f) if r["split"] == "validation" and r["order"] == "2"}
    assert max(steps) == 6 and {0, 2, 4} <= steps  # continued, history kept
    assert set(resumed["final_val_loss"]) == {1, 2}


def test_validation_file_and_bad_sizes(text_file, tmp_path, tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    val = tmp_path / "val.txt"
    val.write_text(text_file.read_text()[:100])
    train, held_out = token_blocks(tiny(text_file, tmp_path, val_text=str(val)), tok)
    assert len(held_out) == len(tok(val.read_text())["input_ids"]) // 32
    with pytest.raises(DataError, match="val.txt: .* fewer than one block of 64"):
        token_blocks(tiny(text_file, tmp_path, val_text=str(val), block_size=64), tok)
    with pytest.raises(ValueError, match="orders must be integers >= 1"):
        pretrain(tiny(text_file, tmp_path, orders=[0, 2]))
    with pytest.raises(ValueError, match="order 64 does not fit"):
        build_model(tiny(text_file, tmp_path), 300, 64)
