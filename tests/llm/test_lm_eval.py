import json
import math

import pytest
import torch

from ho_co.llm.data import DataError
from ho_co.llm.lm_eval import choice_loglikelihoods, multiple_choice, perplexity, read_questions
from ho_co.llm.models import load_pretrained


@pytest.fixture(scope="module")
def gpt2(gpt2_dir):
    model, tokenizer = load_pretrained(str(gpt2_dir))
    return model.eval(), tokenizer


def ids_of(tokenizer, path):
    return tokenizer(path.read_text(), add_special_tokens=False)["input_ids"]


@torch.no_grad()
def model_loss(model, ids, labels=None):
    x = torch.tensor([ids])
    return float(model(input_ids=x, labels=torch.tensor([labels or ids])).loss)


def test_perplexity_of_one_window_is_exp_of_the_model_loss(gpt2, tmp_path):
    model, tokenizer = gpt2
    path = tmp_path / "short.txt"
    path.write_text("The quick brown fox jumps over the lazy dog. A cat sleeps on the warm mat.")
    ids = ids_of(tokenizer, path)
    result = perplexity(model, tokenizer, path, block_size=256)
    assert result["tokens"] == len(ids) - 1
    assert result["perplexity"] == pytest.approx(math.exp(model_loss(model, ids)), rel=1e-5)


def test_disjoint_blocks_and_sliding_windows(gpt2, text_file):
    model, tokenizer = gpt2
    ids = ids_of(tokenizer, text_file)[:100]
    path = text_file.with_name("hundred.txt")
    path.write_text(tokenizer.decode(ids))
    ids = ids_of(tokenizer, path)
    block = 32
    blocks = [ids[i : i + block] for i in range(0, len(ids), block)]
    blocks = [b for b in blocks if len(b) > 1]
    nll = sum(model_loss(model, b) * (len(b) - 1) for b in blocks)
    n = sum(len(b) - 1 for b in blocks)
    disjoint = perplexity(model, tokenizer, path, block_size=block)
    assert disjoint["tokens"] == n
    assert disjoint["nll"] == pytest.approx(nll / n, rel=1e-5)
    sliding = perplexity(model, tokenizer, path, block_size=block, stride=8)
    assert sliding["tokens"] == len(ids) - 1  # every token but the first scored exactly once
    assert sliding["nll"] != pytest.approx(disjoint["nll"], rel=1e-6)  # longer contexts


def test_perplexity_rejects_bad_stride_and_tiny_text(gpt2, tmp_path):
    model, tokenizer = gpt2
    path = tmp_path / "t.txt"
    path.write_text("hello world, hello world")
    with pytest.raises(ValueError, match="stride must be in"):
        perplexity(model, tokenizer, path, block_size=16, stride=32)
    path.write_text("a")
    with pytest.raises(DataError, match=r"t.txt: 1 token\(s\)"):
        perplexity(model, tokenizer, path)


def test_choice_loglikelihood_matches_the_model_loss(gpt2):
    model, tokenizer = gpt2
    context, conts = "Question: What is two plus two?\nAnswer:", [" four", " the lazy dog"]
    lls = choice_loglikelihoods(model, tokenizer, context, conts, max_length=256)
    ctx = tokenizer(context)["input_ids"]
    for cont, ll in zip(conts, lls):
        cont_ids = tokenizer(cont, add_special_tokens=False)["input_ids"]
        labels = [-100] * len(ctx) + cont_ids
        assert ll == pytest.approx(-model_loss(model, ctx + cont_ids, labels) * len(cont_ids), rel=1e-5)


def test_multiple_choice_accuracy(gpt2, tmp_path):
    model, tokenizer = gpt2
    questions = [
        ("What is two plus two?", ["four", "five", "the sun"]),
        ("Where does the sun rise?", ["east", "west"]),
        ("What jumps over the dog?", ["the quick brown fox", "a cat", "nothing"]),
        ("Where does the cat sleep?", ["on the warm mat", "in the sky"]),
    ]
    best, best_norm = [], []
    for q, choices in questions:  # each choice scored alone, unpadded, by the model's own loss
        ctx = tokenizer(f"Question: {q}\nAnswer:")["input_ids"]
        lls = []
        for c in choices:
            cont = tokenizer(" " + c, add_special_tokens=False)["input_ids"]
            lls.append(-model_loss(model, ctx + cont, [-100] * len(ctx) + cont) * len(cont))
        normed = [ll / len((" " + c).encode("utf-8")) for ll, c in zip(lls, choices)]
        best.append(max(range(len(choices)), key=lls.__getitem__))
        best_norm.append(max(range(len(choices)), key=normed.__getitem__))
    # First two answered as the model would (as index, as text), the others not (letter, index).
    answers = [best[0], questions[1][1][best[1]], "ABC"[(best[2] + 1) % 3], (best[3] + 1) % 2]
    answer_index = [best[0], best[1], (best[2] + 1) % 3, (best[3] + 1) % 2]
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n"
                            for (q, c), a in zip(questions, answers)))
    result = multiple_choice(model, tokenizer, path)
    assert result["questions"] == 4
    assert result["accuracy"] == 0.5
    assert result["accuracy_norm"] == sum(b == a for b, a in zip(best_norm, answer_index)) / 4


@pytest.mark.parametrize(
    "line, pattern",
    [
        ('{"question": "q", "choices": ["a", "b"]}', r"mc.jsonl:line 2: missing key 'answer'"),
        ('{"question": "q", "choices": ["a"], "answer": 0}', r"line 2: 'choices' must be a list of at least 2"),
        ('{"question": "q", "choices": ["a", "b"], "answer": 2}', r"line 2: answer index 2 out of range for 2"),
        ('{"question": "q", "choices": ["a", "b"], "answer": "c"}', r"line 2: answer 'c' is neither"),
        ('{"question": "q", "choices": ["a", "b"], "answer": true}', r"line 2: 'answer' must be an index"),
        ('{"question": "", "choices": ["a", "b"], "answer": 0}', r"line 2: 'question' must be a non-empty"),
        ('{"question": "q", "choices": ["a", "b"], "answer": 0', r"line 2: invalid JSON"),
    ],
)
def test_bad_multiple_choice_files_name_the_line(tmp_path, line, pattern):
    path = tmp_path / "mc.jsonl"
    path.write_text('{"question": "q", "choices": ["a", "b"], "answer": "B"}\n' + line + "\n")
    with pytest.raises(DataError, match=pattern):
        read_questions(path)


def test_answer_forms(tmp_path):
    path = tmp_path / "mc.jsonl"
    rows = [("b", 1), ("B", 1), (0, 0), ("A", 0)]
    path.write_text("".join(json.dumps({"question": "q", "choices": ["a", "b"], "answer": a}) + "\n" for a, _ in rows))
    assert [q.answer for q in read_questions(path)] == [i for _, i in rows]
