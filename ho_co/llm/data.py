"""Training data for causal LMs: Alpaca-style instructions and plain text.

Instruction records (`instruction`, optional `input`, `output`) come from a JSON array or a
JSONL file. Each becomes the Alpaca prompt followed by the response and EOS; the prompt's
labels are -100 so only the response is learned (the usual SFT recipe: the model should not
spend capacity predicting the instructions it is given).

The prompt is rendered in one of `PROMPT_FORMATS`: "alpaca" (the template below), "chat" (the
tokenizer's own chat template, one user turn holding the instruction and the input, the response
as the assistant's turn, as an instruction-tuned model was trained and is prompted), or "auto":
chat when the tokenizer has a chat template, else alpaca.

Plain text (`.txt`) is one token stream cut into equal blocks, every token a label.

Bad input never trains silently: a malformed record raises `DataError` naming the file and
the line (JSONL) or record number (JSON array).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

IGNORE_INDEX = -100  # label value skipped by the cross-entropy of every HF causal LM

PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)

PROMPT_FORMATS = ("auto", "alpaca", "chat")

INSTRUCTION_SUFFIXES = (".json", ".jsonl")
TEXT_SUFFIXES = (".txt",)


class DataError(ValueError):
    """A data file that cannot be used as given; the message names file and line."""


@dataclass(frozen=True)
class Instruction:
    instruction: str
    input: str
    output: str
    where: str  # "file:line N" or "file:record N", for later error messages

    def prompt(self) -> str:
        template = PROMPT_WITH_INPUT if self.input else PROMPT_NO_INPUT
        return template.format(instruction=self.instruction, input=self.input)

    def user_message(self) -> str:
        """The instruction and input as one chat turn."""
        return f"{self.instruction}\n\n{self.input}" if self.input else self.instruction


def prompt_format(tokenizer, prompt: str = "auto") -> str:
    """"alpaca" or "chat" for `prompt` (one of PROMPT_FORMATS) and this tokenizer."""
    if prompt not in PROMPT_FORMATS:
        raise ValueError(f"prompt must be one of {', '.join(PROMPT_FORMATS)}, got {prompt!r}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt == "auto":
        return "chat" if has_template else "alpaca"
    if prompt == "chat" and not has_template:
        raise DataError("the tokenizer has no chat template; use the alpaca prompt")
    return prompt


def prompt_ids(record: Instruction, tokenizer, prompt: str = "alpaca") -> list[int]:
    """The token ids of `record`'s prompt, up to where the response starts ("alpaca" or "chat")."""
    if prompt == "chat":
        text = tokenizer.apply_chat_template([{"role": "user", "content": record.user_message()}],
                                             tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(record.prompt(), add_special_tokens=True)["input_ids"]


def _check_record(obj, where: str) -> Instruction:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object with 'instruction' and 'output', got {type(obj).__name__}")
    for key in ("instruction", "output"):
        if key not in obj:
            raise DataError(f"{where}: missing key {key!r} (keys present: {sorted(obj)})")
    fields = {"instruction": obj["instruction"], "input": obj.get("input", ""), "output": obj["output"]}
    for key, value in fields.items():
        if value is None and key == "input":
            fields[key] = ""
        elif not isinstance(value, str):
            raise DataError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    if not fields["instruction"].strip():
        raise DataError(f"{where}: 'instruction' is empty")
    if not fields["output"].strip():
        raise DataError(f"{where}: 'output' is empty, nothing to learn")
    return Instruction(**fields, where=where)


def jsonl_records(path: Path, text: str):
    """(where, object) for each non-blank line of a JSONL text; `where` is "FILE:line N"."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:line {lineno}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: invalid JSON ({err.msg} at column {err.colno})") from None


def read_instructions(path: str | Path) -> list[Instruction]:
    """Alpaca records from `.json` (an array of objects) or `.jsonl` (one object per line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    records: list[Instruction] = []
    if path.suffix == ".jsonl":
        records = [_check_record(obj, where) for where, obj in jsonl_records(path, text)]
    elif path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:line {err.lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
        records = [_check_record(obj, f"{path}:record {i}") for i, obj in enumerate(data)]
    else:
        raise DataError(f"{path}: instruction data must be .json or .jsonl, got {path.suffix!r}")
    if not records:
        raise DataError(f"{path}: no records")
    return records


def encode_instruction(record: Instruction, tokenizer, max_length: int, prompt: str = "alpaca") -> dict[str, list[int]]:
    """input_ids / attention_mask / labels with the prompt ("alpaca" or "chat") masked (-100)
    and EOS appended.

    Prompt and response are tokenized separately, so the mask boundary is exact whatever the
    tokenizer merges across it.
    """
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no EOS token; responses need one to learn where to stop")
    prompt_tokens = prompt_ids(record, tokenizer, prompt)
    response_ids = tokenizer(record.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(prompt_tokens) >= max_length:
        raise DataError(
            f"{record.where}: the prompt is {len(prompt_tokens)} tokens, leaving no room for the "
            f"response within max_length={max_length}; raise --max-length or shorten the record"
        )
    input_ids = (prompt_tokens + response_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_tokens) + response_ids)[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def read_text(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    if not text.strip():
        raise DataError(f"{path}: the text file is empty")
    return text


def text_token_ids(path: str | Path, tokenizer) -> list[int]:
    """The whole file as one token stream (no special tokens), for blocks or perplexity."""
    return tokenizer(read_text(path), add_special_tokens=False)["input_ids"]


def text_blocks(ids: list[int], block_size: int, where: str, setting: str = "--max-length") -> list[dict[str, list[int]]]:
    """Equal blocks of `block_size` tokens of one token stream (the tail shorter than a block is
    dropped), every token a label; DataError naming `where` and the `setting` to lower when not
    one block fits."""
    if block_size < 2:
        raise DataError(f"block_size must be >= 2 to have a next token to predict, got {block_size}")
    n_blocks = len(ids) // block_size
    if n_blocks == 0:
        raise DataError(f"{where}: {len(ids)} tokens, fewer than one block of {block_size}; lower {setting}")
    return [
        {"input_ids": block, "attention_mask": [1] * block_size, "labels": list(block)}
        for block in (ids[i * block_size : (i + 1) * block_size] for i in range(n_blocks))
    ]


def encode_text_blocks(path: str | Path, tokenizer, block_size: int) -> list[dict[str, list[int]]]:
    """The text file as equal blocks of `block_size` tokens (`text_blocks`)."""
    return text_blocks(text_token_ids(path, tokenizer), block_size, str(path))


def load_examples(path: str | Path, tokenizer, max_length: int, prompt: str = "auto") -> list[dict[str, list[int]]]:
    """Tokenized training examples from an instruction file (its prompts in the `prompt` format,
    see `prompt_format`) or a plain text file (by suffix)."""
    path = Path(path)
    if path.suffix in INSTRUCTION_SUFFIXES:
        fmt = prompt_format(tokenizer, prompt)
        return [encode_instruction(r, tokenizer, max_length, fmt) for r in read_instructions(path)]
    if path.suffix in TEXT_SUFFIXES:
        return encode_text_blocks(path, tokenizer, max_length)
    raise DataError(
        f"{path}: unknown data format {path.suffix!r}; use {', '.join(INSTRUCTION_SUFFIXES)} "
        f"(Alpaca instructions) or {', '.join(TEXT_SUFFIXES)} (plain text)"
    )


def context_length(model, max_length: int) -> int:
    """`max_length` capped at the model's position limit (longer inputs would index past it)."""
    config = model.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return min(max_length, limit) if limit else max_length


def make_collator(tokenizer):
    """Pads input_ids with the pad token and labels with -100 (padding is never learned)."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, padding=True)
