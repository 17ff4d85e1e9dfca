"""Evaluate a causal LM: perplexity on a text file, accuracy on multiple-choice questions,
exact match of generated answers.

Perplexity slides a window of `block_size` tokens over the file with step `stride`; each token
is scored once, with as much left context as the window allows (the Hugging Face perplexity
recipe; `stride = block_size` gives disjoint blocks).

Multiple choice scores each choice by its log-likelihood as a continuation of
"Question: {question}\nAnswer:", the way lm-eval-harness scores ARC and PIQA: `accuracy`
picks the highest total log-likelihood, `accuracy_norm` the highest per byte of the choice.
The JSONL records are {"question": str, "choices": [str, ...], "answer": int | str}; the
answer is a 0-based index, the text of a choice, or a letter A, B, ...

Exact match (`exact_match`) takes Alpaca records (`instruction`, `input`, `output`, as
`ho-co finetune` trains on) whose output ends on a number (`ho_co.llm.tasks.final_answer`):
each prompt (the chat template by default, see `data.prompt_format`) is answered greedily, and
the number the reply ends on must equal the record's. It also reports the held-out loss: the
mean negative log-likelihood per response token of the records' own outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from ho_co.llm.data import DataError, context_length, jsonl_records, text_token_ids


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def perplexity(model, tokenizer, path: str | Path, block_size: int = 1024, stride: int | None = None) -> dict:
    """{"perplexity", "nll" (mean per token), "tokens" (scored)} of the text file at `path`."""
    block_size = context_length(model, block_size)
    stride = stride or block_size
    if not 1 <= stride <= block_size:
        raise ValueError(f"stride must be in [1, block_size={block_size}], got {stride}")
    ids = torch.tensor(text_token_ids(path, tokenizer), dtype=torch.long)
    if len(ids) < 2:
        raise DataError(f"{path}: {len(ids)} token(s), need at least 2 to score a prediction")
    model.eval()
    device = _device(model)
    total_nll, scored, done = 0.0, 0, 1  # token 0 has no context: never scored
    starts = range(0, len(ids) - 1, stride)
    from tqdm.auto import tqdm

    for start in tqdm(starts, desc="perplexity", leave=False):
        window = ids[start : start + block_size].to(device)
        logits = model(input_ids=window[None]).logits[0, :-1].float()
        targets = window[1:].clone()
        first_new = done - start - 1  # targets[j] is token start + j + 1
        targets[: max(first_new, 0)] = -100
        nll = F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum")
        n_new = int((targets != -100).sum())
        total_nll += float(nll)
        scored += n_new
        done = start + len(window)
        if done >= len(ids):
            break
    mean = total_nll / scored
    return {"perplexity": math.exp(mean), "nll": mean, "tokens": scored}


@dataclass(frozen=True)
class Question:
    question: str
    choices: list[str]
    answer: int
    where: str


def _answer_index(answer, choices: list[str], where: str) -> int:
    if isinstance(answer, bool) or not isinstance(answer, (int, str)):
        raise DataError(f"{where}: 'answer' must be an index, a choice's text or a letter, got {answer!r}")
    if isinstance(answer, int):
        if not 0 <= answer < len(choices):
            raise DataError(f"{where}: answer index {answer} out of range for {len(choices)} choices")
        return answer
    if answer in choices:
        return choices.index(answer)
    if len(answer) == 1 and "A" <= answer <= "Z" and ord(answer) - ord("A") < len(choices):
        return ord(answer) - ord("A")
    raise DataError(f"{where}: answer {answer!r} is neither one of the choices {choices} nor a letter for them")


def read_questions(path: str | Path) -> list[Question]:
    """Multiple-choice records from a JSONL file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    questions = []
    for where, obj in jsonl_records(path, path.read_text(encoding="utf-8")):
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        for key in ("question", "choices", "answer"):
            if key not in obj:
                raise DataError(f"{where}: missing key {key!r} (keys present: {sorted(obj)})")
        question, choices = obj["question"], obj["choices"]
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: 'question' must be a non-empty string")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise DataError(f"{where}: 'choices' must be a list of at least 2 non-empty strings, got {choices!r}")
        questions.append(Question(question, choices, _answer_index(obj["answer"], choices, where), where))
    if not questions:
        raise DataError(f"{path}: no questions")
    return questions


@torch.no_grad()
def choice_loglikelihoods(model, tokenizer, context: str, continuations: list[str], max_length: int) -> list[float]:
    """Sum of log p(continuation tokens | context) for each continuation, in one padded batch."""
    ctx = tokenizer(context, add_special_tokens=True)["input_ids"]
    rows, spans = [], []
    for cont in continuations:
        cont_ids = tokenizer(cont, add_special_tokens=False)["input_ids"]
        if not cont_ids:
            raise DataError(f"choice {cont!r} encodes to no tokens")
        full = (ctx + cont_ids)[-max_length:]  # lm-eval-harness: cut the context from the left
        rows.append(full)
        spans.append(min(len(cont_ids), len(full) - 1))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = _device(model)
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    logprobs = model(input_ids=input_ids, attention_mask=mask).logits.float().log_softmax(-1)
    scores = []
    for i, (row, n) in enumerate(zip(rows, spans)):
        positions = torch.arange(len(row) - n - 1, len(row) - 1, device=device)  # predict the last n
        targets = input_ids[i, positions + 1]
        scores.append(float(logprobs[i, positions, targets].sum()))
    return scores


def multiple_choice(model, tokenizer, path: str | Path, max_length: int = 1024) -> dict:
    """{"accuracy", "accuracy_norm", "questions"} on the JSONL multiple-choice file at `path`."""
    from tqdm.auto import tqdm

    questions = read_questions(path)
    max_length = context_length(model, max_length)
    model.eval()
    correct = correct_norm = 0
    for q in tqdm(questions, desc="multiple choice", leave=False):
        conts = [" " + c for c in q.choices]
        try:
            lls = choice_loglikelihoods(model, tokenizer, f"Question: {q.question}\nAnswer:", conts, max_length)
        except DataError as err:
            raise DataError(f"{q.where}: {err}") from None
        normed = [ll / len(c.encode("utf-8")) for ll, c in zip(lls, conts)]
        correct += max(range(len(lls)), key=lls.__getitem__) == q.answer
        correct_norm += max(range(len(normed)), key=normed.__getitem__) == q.answer
    n = len(questions)
    return {"accuracy": correct / n, "accuracy_norm": correct_norm / n, "questions": n}


def _left_padded(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask


@torch.no_grad()
def generate_replies(model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 64,
                     batch_size: int = 16) -> list[str]:
    """The greedy continuation of each tokenized prompt (left-padded batches), decoded without
    special tokens; generation stops at EOS."""
    from transformers import GenerationConfig

    model.eval()
    device = _device(model)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    pad = eos if pad is None else pad
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad)
    replies = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = _left_padded(prompts[start : start + batch_size], pad, device)
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        replies += tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
    return replies


@torch.no_grad()
def response_loss(model, tokenizer, examples: list[dict[str, list[int]]], batch_size: int = 16) -> float:
    """Mean negative log-likelihood per label token (the responses of `data.encode_instruction`
    examples), over all of them."""
    from ho_co.llm.data import IGNORE_INDEX, make_collator

    model.eval()
    device = _device(model)
    collate = make_collator(tokenizer)
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[start : start + batch_size]).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                       ignore_index=IGNORE_INDEX, reduction="sum"))
        count += int((labels != IGNORE_INDEX).sum())
    return total / count


def read_answers(path: str | Path, limit: int | None = None):
    """(records, gold answers) of an Alpaca file whose outputs end on a number; DataError naming
    the file and line of a record without one."""
    from ho_co.llm.data import read_instructions
    from ho_co.llm.tasks import final_answer

    records = read_instructions(path)[:limit]
    answers = []
    for record in records:
        answer = final_answer(record.output)
        if answer is None:
            raise DataError(f"{record.where}: 'output' holds no answer (no number to compare a reply with)")
        answers.append(answer)
    return records, answers


def exact_match(model, tokenizer, path: str | Path, prompt: str = "auto", max_new_tokens: int = 64,
                batch_size: int = 16, limit: int | None = None, max_length: int = 512,
                with_loss: bool = True, with_replies: bool = False) -> dict:
    """{"exact_match", "questions", "correct" (one bool per record), "loss" (`response_loss`),
    "replies" (if asked)} on the Alpaca records of `path` (the first `limit`), prompted in the
    `prompt` format."""
    from ho_co.llm.data import encode_instruction, prompt_format, prompt_ids
    from ho_co.llm.tasks import final_answer

    records, answers = read_answers(path, limit)
    fmt = prompt_format(tokenizer, prompt)
    max_length = context_length(model, max_length)
    replies = generate_replies(model, tokenizer, [prompt_ids(r, tokenizer, fmt) for r in records],
                               max_new_tokens, batch_size)
    correct = [final_answer(reply) == answer for reply, answer in zip(replies, answers)]
    result = {"exact_match": sum(correct) / len(records), "questions": len(records), "correct": correct}
    if with_loss:
        examples = [encode_instruction(r, tokenizer, max_length, fmt) for r in records]
        result["loss"] = response_loss(model, tokenizer, examples, batch_size)
    if with_replies:
        result["replies"] = replies
    return result
