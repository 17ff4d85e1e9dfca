"""The arithmetic task (generator, shipped splits, answers), exact match, and `ho-co llm-experiment`
end to end on a tiny GGUF model: runs, resume, report, and the checks before any run."""

import json
import re
from pathlib import Path

import pytest
import torch

from ho_co.cli import main
from ho_co.llm import experiment, lm_eval, tasks
from ho_co.llm.data import DataError, load_examples, make_collator
from ho_co.llm.experiment import ExperimentConfig, read_results, run_experiment

DATA = Path(__file__).resolve().parents[2] / "data" / "llm"


def _value(expression: str) -> int:
    a, op, b = expression.split()
    return {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b), "/": int(a) // int(b)}[op]


def test_problems_are_seeded_and_their_worked_answers_are_right():
    problems = tasks.make_problems(300, seed=5)
    assert problems == tasks.make_problems(300, seed=5) != tasks.make_problems(300, seed=6)
    for record in problems:
        *steps, answer = record["output"].split(". ")
        previous = None
        for step in steps:
            left, right = step.split(" = ")
            assert _value(left) == int(right) >= 0
            if previous is not None:
                assert previous in left.split()  # each step uses the one before
            previous = right
        assert answer == f"Answer: {previous}" and tasks.final_answer(record["output"]) == previous
        assert record["instruction"].endswith(tasks.ANSWER_PROMPT)
    assert len({r["instruction"].split(".")[0].split()[1] for r in problems}) > 3  # several templates
    assert max(int(tasks.final_answer(r["output"])) for r in problems) <= 128


def test_the_shipped_splits_are_the_generators(tmp_path):
    train, heldout, val = tasks.write_splits(tmp_path)
    for name, written in ((tasks.TRAIN_FILE, train), (tasks.HELDOUT_FILE, heldout), (tasks.VAL_FILE, val)):
        assert (DATA / name).read_bytes() == written.read_bytes()
    train_set = {json.loads(line)["instruction"] for line in train.read_text().splitlines()}
    held = [json.loads(line)["instruction"] for line in heldout.read_text().splitlines()]
    chosen_on = {json.loads(line)["instruction"] for line in val.read_text().splitlines()}
    assert len(train_set) == 1000 and len(held) == len(set(held)) == 200 and len(chosen_on) == 100
    assert not train_set & set(held) and not chosen_on & (train_set | set(held))


@pytest.mark.parametrize("reply, answer", [
    ("7 + 5 = 12. 12 - 3 = 9. Answer: 9", "9"),
    ("Mia has 9 pears.\n\nThe answer is: 12", "12"),
    ("answer = 004, and then 5 more", "4"),
    ("She has 3 + 4 = 7 cars in total.", "7"),
    ("I do not know.", None),
])
def test_final_answer(reply, answer):
    assert tasks.final_answer(reply) == answer


@pytest.fixture
def task_files(tmp_path):
    train, heldout, _ = tasks.write_splits(tmp_path / "task", n_train=24, n_heldout=6, seed=3, n_val=4)
    return train, heldout


def test_a_record_without_an_answer_fails_naming_file_and_line(task_files, tmp_path, capsys):
    train, _ = task_files
    lines = train.read_text().splitlines()
    lines[4] = json.dumps({"instruction": "How many?", "output": "Many, I think."})
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(bad))}:line 5: 'output' holds no answer"):
        lm_eval.read_answers(bad)
    lines[4] = json.dumps({"instruction": "How many?"})
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "exp"
    assert main(["llm-experiment", "--output", str(out), f"train={bad}", "cores=[]"]) == 2
    assert capsys.readouterr().err.strip() == f"ho-co llm-experiment: error: {bad}:line 5: missing key 'output' " \
                                              "(keys present: ['instruction'])"
    assert not out.exists()


def test_exact_match_compares_the_final_numbers(gguf_source, gguf_cache, task_files, monkeypatch):
    from ho_co.llm.models import load_pretrained

    path, _ = gguf_source
    _, heldout = task_files
    model, tokenizer = load_pretrained(str(path))
    records, answers = lm_eval.read_answers(heldout)
    replies = [f"so it is {a}" if i % 3 else "no idea" for i, a in enumerate(answers)]
    seen = []

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size):
        seen.extend(tokenizer.decode(p) for p in prompts)
        return replies[: len(prompts)]

    monkeypatch.setattr(lm_eval, "generate_replies", fake_generate)
    result = lm_eval.exact_match(model, tokenizer, heldout)
    assert result["correct"] == [bool(i % 3) for i in range(6)] and result["exact_match"] == pytest.approx(4 / 6)
    assert seen[0] == f"user: {records[0].instruction}\nassistant: "  # the chat template
    examples = load_examples(heldout, tokenizer, 256)
    one = make_collator(tokenizer)(examples[:1])
    with torch.no_grad():
        direct = float(model(**one).loss)
    assert lm_eval.response_loss(model, tokenizer, examples[:1]) == pytest.approx(direct, rel=1e-5)


def test_batched_greedy_replies_are_the_single_ones(gguf_source, gguf_cache):
    from ho_co.llm.models import load_pretrained

    path, _ = gguf_source
    model, tokenizer = load_pretrained(str(path))
    prompts = [tokenizer("The quick brown")["input_ids"], tokenizer("Name")["input_ids"]]
    batched = lm_eval.generate_replies(model, tokenizer, prompts, max_new_tokens=5, batch_size=2)
    alone = [lm_eval.generate_replies(model, tokenizer, [p], max_new_tokens=5)[0] for p in prompts]
    assert batched == alone  # left padding changes nothing


def tiny_config(tmp_path, task_files, gguf_source, **overrides):
    train, heldout = task_files
    settings = dict(model=str(gguf_source[0]), train=str(train), heldout=str(heldout), output=str(tmp_path / "exp"),
                    variants=["full", "c2q-2", "lora-qp", "quanta"], seeds=[0], max_steps=2, batch_size=2,
                    max_length=256, eval_examples=2, curve_examples=1, eval_every=1, max_new_tokens=2,
                    eval_batch_size=2, cores=[])
    settings.update(overrides)
    return ExperimentConfig(**settings)


def test_the_experiment_runs_resumes_and_reports(tmp_path, task_files, gguf_source, gguf_cache, monkeypatch):
    config = tiny_config(tmp_path, task_files, gguf_source)
    summary = run_experiment(config)
    out = Path(config.output)
    rows = read_results(out)
    assert [(r["label"], r["seed"]) for r in rows] == [("base", 0), ("full", 0), ("c2q-2", 0), ("lora-qp", 0),
                                                      ("quanta", 0)]
    by_label = {r["label"]: r for r in rows}
    assert by_label["base"]["trainable_parameters"] == 0 and by_label["base"]["curve"][0][0] == 0
    for label in ("full", "c2q-2", "lora-qp", "quanta"):
        row = by_label[label]
        assert row["steps"] == 2 and [s for s, _ in row["curve"]] == [1, 2] and row["questions"] == 2
        assert row["train_cpu_s"] >= 0 and row["loss"] > 0 and 0 <= row["exact_match"] <= 1
    plan = json.loads((out / "plan.json").read_text())
    quanta, lora = by_label["quanta"]["trainable_parameters"], by_label["lora-qp"]["trainable_parameters"]
    assert quanta == plan["quanta_parameters"] and lora == plan["lora_qp_parameters"]
    per_rank = lora // plan["lora_qp_rank"]
    assert abs(lora - quanta) <= per_rank / 2  # the nearest rank
    assert by_label["c2q-2"]["trainable_parameters"] > by_label["full"]["trainable_parameters"]  # + ho_scale
    assert (out / "adapters" / "lora-qp" / "adapter_config.json").is_file()
    assert (out / "adapters" / "quanta" / "quanta_adapter").is_dir() and not (out / "adapters" / "full").exists()
    assert (out / "heldout_accuracy.png").stat().st_size > 1000
    assert summary["table"].splitlines()[2].startswith("| base | - | 1 |") and "| quanta | 0.0002 | 1 |" in summary["table"]
    assert (out / "results.csv").read_text().startswith("label,seeds,exact_match,exact_match_sd,loss,")

    calls = []  # resumed with a second seed: only its runs
    original = experiment.run_job
    monkeypatch.setattr(experiment, "run_job", lambda *a, **k: calls.append(a[1:3]) or original(*a, **k))
    run_experiment(tiny_config(tmp_path, task_files, gguf_source, seeds=[0, 1], variants=["full", "lora-qp"]))
    assert calls == [("full", 1), ("lora-qp", 1)]
    assert read_results(out)[:5] == rows
    table = experiment.summarize(read_results(out))
    assert [(r["label"], r["seeds"]) for r in table] == [("base", 1), ("full", 2), ("c2q-2", 1), ("lora-qp", 2),
                                                        ("quanta", 1)]

    with pytest.raises(ValueError, match=r"holds results of other settings \(they differ in max_steps\)"):
        run_experiment(tiny_config(tmp_path, task_files, gguf_source, max_steps=3))


def test_runs_side_by_side_in_worker_processes(tmp_path, task_files, gguf_source, gguf_cache):
    config = tiny_config(tmp_path, task_files, gguf_source, variants=["lora-8"], cores=[0], eval_every=5)
    Path(config.output).mkdir()  # the base model's row is there already: one worker to start
    base = {"label": "base", "seed": 0, "exact_match": 0.0, "loss": 1.0, "trainable_parameters": 0,
            "train_cpu_s": 0.0, "curve": [[0, 0.0]]}
    experiment.append_result(config.output, base)
    summary = run_experiment(config)
    rows = read_results(config.output)
    assert summary["failed"] == [] and rows[0] == base and len(rows) == 2
    assert (rows[1]["label"], rows[1]["core"], rows[1]["threads"], rows[1]["steps"]) == ("lora-8", 0, 1, 2)
    assert (Path(config.output) / "logs" / "lora-8-s0.log").is_file()


@pytest.mark.parametrize("overrides, message", [
    ({"quanta_dims": [5, 5]}, "quanta: module 'model.layers.0.self_attn.q_proj' (64->64): QuanTA input dims (5, 5) "
                              "multiply to 25, but the layer has 64 input features"),
    ({"variants": ["c2q-100"]}, "c2q: module 'model.layers.0.self_attn.q_proj' (64->64): HOLinear order 100 "
                                "exceeds in_features 64"),
    ({"variants": ["dora"]}, "unknown variant 'dora'"),
    ({"eval_examples": 7}, "eval_examples=7, but"),
    ({"cores": [0, 999]}, "cores [0, 999]: this process may run on cores"),
    ({"lrs": {"dora": 1e-3}}, "lrs.dora: unknown method"),
    ({"max_length": 100}, "arith_train.jsonl:line 1: the prompt is"),
])
def test_bad_settings_fail_before_any_run(tmp_path, task_files, gguf_source, gguf_cache, monkeypatch, overrides,
                                          message):
    monkeypatch.setattr(experiment, "run_job", lambda *a, **k: pytest.fail("a run started"))
    config = tiny_config(tmp_path, task_files, gguf_source, **overrides)
    with pytest.raises(ValueError) as err:
        run_experiment(config)
    assert str(err.value).startswith(message) or message in str(err.value)
    assert "\n" not in str(err.value) and not Path(config.output).exists()


def test_quanta_parameter_count_matches_the_adapted_model(gguf_source, gguf_cache):
    from ho_co.adapters import trainable_parameters
    from ho_co.llm.methods import MethodSpec, apply_method
    from ho_co.llm.models import load_pretrained

    path, _ = gguf_source
    skeleton = experiment.skeleton_of(str(path))
    for spec in (MethodSpec("quanta"), MethodSpec("quanta", dims=[4, 4, 4], exclude_modules=["down_proj"])):
        model, _ = load_pretrained(str(path))
        counted = experiment.quanta_parameters(skeleton, spec)
        assert trainable_parameters(apply_method(model, spec))[0] == counted
    rank, n = experiment.lora_rank_for(skeleton, counted)
    model, _ = load_pretrained(str(path))
    assert trainable_parameters(apply_method(model, MethodSpec("lora", lora_r=rank)))[0] == n


def _row(label, seed, lr, em):
    return {"label": label, "seed": seed, "lr": lr, "exact_match": em, "loss": 1.0 - em,
            "trainable_parameters": 0 if lr is None else 10, "train_cpu_s": 5.0, "curve": [[0 if lr is None else 2, em]]}


def test_the_report_merges_folders_and_names_a_variant_run_at_two_rates(tmp_path, capsys):
    from ho_co.cli import main

    usual, tuned = tmp_path / "usual", tmp_path / "tuned"
    for folder, rows in ((usual, [_row("base", 0, None, 0.0), _row("full", 0, 2e-5, 0.5), _row("lora-qp", 0, 2e-4, 0.1)]),
                         (tuned, [_row("base", 0, None, 0.0), _row("lora-qp", 0, 1e-3, 0.4),
                                  _row("lora-qp", 1, 1e-3, 0.6)])):
        folder.mkdir()
        for row in rows:
            experiment.append_result(folder, row)
    assert main(["llm-experiment", "--output", str(usual), "--report", str(tuned)]) == 0
    lines = (usual / "results.md").read_text().splitlines()
    assert [line.split(" | ")[0:3] for line in lines[2:]] == [
        ["| base", "-", "1"], ["| full", "2e-05", "1"], ["| lora-qp @ 0.0002", "0.0002", "1"],
        ["| lora-qp @ 0.001", "0.001", "2"]]
    assert "| 50.0 ± 14.1 |" in lines[5]  # 40% and 60%: the two seeds of the tuned rate
    assert (usual / "heldout_accuracy.png").stat().st_size > 1000 and not (tuned / "results.md").exists()
    assert capsys.readouterr().out.startswith("| variant | lr | seeds |")
    with pytest.raises(ValueError, match=r"empty/results.jsonl: no results yet"):
        experiment.report(usual, [tmp_path / "empty"])
