"""`ho-co finetune`, `lm-eval` and `pretrain` end to end on tiny local models."""

import json

import pytest

from ho_co.cli import main


def run_json(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index("{\n"):])  # the summary is the last thing printed


def test_finetune_resume_and_lm_eval(gpt2_dir, alpaca_jsonl, text_file, tmp_path, capsys):
    out = tmp_path / "c2q"
    common = ["finetune", "--model", str(gpt2_dir), "--method", "c2q", "--data", str(alpaca_jsonl),
              "--eval-data", str(alpaca_jsonl), "--output", str(out), "--order", "4",
              "--target-modules", "c_attn", "c_fc", "--batch-size", "2", "--save-steps", "1", "--lr", "1e-3"]
    first = run_json(capsys, common + ["--max-steps", "2"])
    assert first["steps"] == 2 and first["method"] == "c2q" and "eval_loss" in first
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    resumed = run_json(capsys, common + ["--max-steps", "3", "--resume"])
    assert resumed["steps"] == 3
    meta = json.loads((out / "ho_co_finetune.json").read_text())
    assert meta["spec"]["order"] == 4 and meta["spec"]["replaced"] == [
        "transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_fc"]

    mc = tmp_path / "mc.jsonl"
    mc.write_text(json.dumps({"question": "Name a color.", "choices": ["Blue.", "Four."], "answer": 0}) + "\n")
    results = run_json(capsys, ["lm-eval", "--model", str(out), "--text", str(text_file), "--choices", str(mc),
                                "--block-size", "64", "--stride", "32"])
    assert results["text"]["perplexity"] > 1 and results["text"]["tokens"] > 100
    assert results["choices"]["questions"] == 1


def test_finetune_lora_on_text_then_lm_eval(llama_dir, text_file, tmp_path, capsys):
    out = tmp_path / "lora"
    summary = run_json(capsys, ["finetune", "--model", str(llama_dir), "--method", "lora", "--data", str(text_file),
                                "--output", str(out), "--max-steps", "1", "--max-length", "32",
                                "--target-modules", "q_proj", "v_proj"])
    assert 0 < summary["trainable_parameters"] < summary["total_parameters"]
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    results = run_json(capsys, ["lm-eval", "--model", str(out), "--text", str(text_file)])
    assert results["text"]["perplexity"] > 1


def test_bad_inputs_fail_with_one_clear_line(llama_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a", "outptu": "b"}\n')
    argv = ["finetune", "--model", str(llama_dir), "--method", "full", "--data", str(bad), "--output", str(tmp_path)]
    assert main(argv) == 2
    assert "bad.jsonl:line 2: missing key 'output'" in capsys.readouterr().err
    assert main(argv[:-2] + ["--output", str(tmp_path / "never"), "--merge"]) == 2  # checked before training
    assert "merge applies to the adapters lora and quanta, not to full" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
    assert main(["lm-eval", "--model", str(llama_dir)]) == 2
    assert "give --text FILE, --choices FILE" in capsys.readouterr().err
    assert main(["pretrain", "--text", str(bad), "--output", str(tmp_path), "n_layers=2"]) == 2
    assert "Key 'n_layers' not in 'PretrainConfig'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["finetune", "--model", str(llama_dir), "--method", "dora", "--data", str(bad)])


def test_pretrain_overrides(text_file, tmp_path, capsys):
    out = tmp_path / "pre"
    result = run_json(capsys, ["pretrain", "--text", str(text_file), "--output", str(out), "orders=[1,2]",
                               "n_embd=32", "n_layer=1", "n_head=2", "block_size=32", "vocab_size=300",
                               "batch_size=4", "max_steps=2", "eval_steps=2", "use_cpu=true"])
    assert set(result["final_val_loss"]) == {"1", "2"}
    assert (out / "loss_curves.png").is_file()


def test_finetune_checks_the_data_before_the_model(llama_dir, text_file, tmp_path, capsys):
    missing_model = str(tmp_path / "no_model")
    argv = ["finetune", "--method", "full", "--output", str(tmp_path / "out")]
    assert main(argv + ["--model", missing_model, "--data", str(tmp_path / "no_data.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"ho-co finetune: error: {tmp_path / 'no_data.txt'}: no such data file (--data)"
    assert main(argv + ["--model", str(llama_dir), "--data", str(text_file),
                        "--eval-data", str(tmp_path / "no_eval.jsonl")]) == 2
    assert "no_eval.jsonl: no such data file (--eval-data)" in capsys.readouterr().err
    assert main(argv + ["--model", missing_model, "--data", str(text_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ho-co finetune: error: {missing_model}: no local model directory") and "\n" not in err
    assert not (tmp_path / "out").exists()


def help_of(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return capsys.readouterr().out


def test_help_lists_every_override_with_its_default(capsys):
    from dataclasses import fields

    from ho_co.llm.finetune import FinetuneConfig
    from ho_co.llm.methods import MethodSpec
    from ho_co.llm.pretrain import PretrainConfig

    help_text = help_of("pretrain", capsys)
    assert "  orders=[1,2,4]" in help_text and "  val_text=null" in help_text and "  lr=0.001" in help_text
    for f in fields(PretrainConfig):
        if f.name not in ("text", "output"):  # the two flags
            assert f"  {f.name}=" in help_text

    help_text = help_of("finetune", capsys)
    assert "  spec.lora_dropout=0.05" in help_text and "  lr=null" in help_text and "--lora-r" in help_text
    keys = [f.name for f in fields(FinetuneConfig) if f.name not in ("model", "data", "spec")]  # model, data: flags
    keys += [f"spec.{f.name}" for f in fields(MethodSpec) if f.name != "method" and "result" not in f.metadata]
    for key in keys:
        assert f"  {key}=" in help_text
    assert "spec.replaced=" not in help_text  # filled in by apply_method, not set


def test_every_finetune_field_is_settable_and_has_one_default(monkeypatch, capsys):
    from ho_co.llm.finetune import FinetuneConfig
    from ho_co.llm.methods import MethodSpec

    seen = []
    monkeypatch.setattr("ho_co.llm.finetune.finetune", lambda config: seen.append(config) or {})
    required = ["finetune", "--model", "m", "--method", "lora", "--data", "d.txt"]
    assert main(required) == 0
    assert seen[-1] == FinetuneConfig(model="m", data="d.txt", spec=MethodSpec("lora"))  # the dataclass's defaults
    assert seen[-1].output == "runs/finetune-lora"

    assert main(required + ["--order", "3", "--target-modules", "q_proj", "*.mlp.*", "--merge", "--lr", "1e-3",
                            "spec.lora_dropout=0.2", "logging_steps=5", "use_cpu=true", "lr=2e-3"]) == 0
    config = seen[-1]
    assert (config.spec.order, config.spec.target_modules, config.merge) == (3, ["q_proj", "*.mlp.*"], True)
    assert (config.spec.lora_dropout, config.logging_steps, config.use_cpu) == (0.2, 5, True)
    assert config.lr == 2e-3  # a key=value override wins over the flag
    capsys.readouterr()

    assert main(required + ["spec.lora_dropot=0.2"]) == 2
    assert "Key 'lora_dropot' not in 'MethodSpec'" in capsys.readouterr().err
    assert main(required + ["dtype=float64"]) == 2
    assert capsys.readouterr().err == ("ho-co finetune: error: dtype must be one of float32, bfloat16, float16, "
                                       "got 'float64'\n")
    assert main(required + ["spec.order=1", "spec.method=c2q"]) == 2
    assert "c2q needs a HOLinear order >= 2" in capsys.readouterr().err
