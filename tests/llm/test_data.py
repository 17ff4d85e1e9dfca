import json

import pytest

from ho_co.llm.data import (
    IGNORE_INDEX,
    DataError,
    encode_instruction,
    encode_text_blocks,
    load_examples,
    make_collator,
    read_instructions,
)


def test_jsonl_and_json_array_give_the_same_records(tmp_path, alpaca_jsonl, instructions):
    array = tmp_path / "alpaca.json"
    array.write_text(json.dumps(instructions, indent=1))
    a, b = read_instructions(alpaca_jsonl), read_instructions(array)
    assert [(r.instruction, r.input, r.output) for r in a] == [(r.instruction, r.input, r.output) for r in b]
    assert a[2].input == ""  # 'input' is optional
    assert "### Input:\n2 and 2" in a[1].prompt() and "### Input" not in a[0].prompt()


def test_prompt_is_masked_and_response_ends_with_eos(alpaca_jsonl, tokenizer):
    record = read_instructions(alpaca_jsonl)[1]
    ex = encode_instruction(record, tokenizer, max_length=512)
    n_prompt = len(tokenizer(record.prompt())["input_ids"])
    assert ex["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]
    assert ex["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ex["input_ids"][n_prompt:-1]) == record.output
    assert len(ex["attention_mask"]) == len(ex["input_ids"])


def test_truncation_keeps_prompt_mask_and_rejects_prompt_only(alpaca_jsonl, tokenizer):
    record = read_instructions(alpaca_jsonl)[3]
    n_prompt = len(tokenizer(record.prompt())["input_ids"])
    ex = encode_instruction(record, tokenizer, max_length=n_prompt + 2)
    assert len(ex["input_ids"]) == n_prompt + 2
    assert sum(label != IGNORE_INDEX for label in ex["labels"]) == 2
    with pytest.raises(DataError, match=r"alpaca.jsonl:line 4.*max_length"):
        encode_instruction(record, tokenizer, max_length=n_prompt)


def test_collator_pads_labels_with_ignore_index(alpaca_jsonl, tokenizer):
    examples = load_examples(alpaca_jsonl, tokenizer, 512)
    batch = make_collator(tokenizer)(examples[:2])
    lengths = [len(e["input_ids"]) for e in examples[:2]]
    short = lengths.index(min(lengths))
    assert batch["input_ids"].shape == batch["labels"].shape == (2, max(lengths))
    assert (batch["labels"][short, min(lengths):] == IGNORE_INDEX).all()
    assert (batch["attention_mask"][short, min(lengths):] == 0).all()


def test_text_blocks(text_file, tokenizer):
    blocks = encode_text_blocks(text_file, tokenizer, 16)
    ids = tokenizer(text_file.read_text(), add_special_tokens=False)["input_ids"]
    assert len(blocks) == len(ids) // 16
    assert blocks[1]["input_ids"] == ids[16:32] == blocks[1]["labels"]
    with pytest.raises(DataError, match=r"corpus.txt: \d+ tokens, fewer than one block"):
        encode_text_blocks(text_file, tokenizer, 10**6)


@pytest.mark.parametrize(
    "lines, pattern",
    [
        (['{"instruction": "a", "output": "b"}', '{"instruction": "a", "output": }'], r"bad.jsonl:line 2: invalid JSON"),
        (['{"instruction": "a", "output": "b"}', "", '{"instruction": "a"}'], r"bad.jsonl:line 3: missing key 'output'"),
        (['{"instruction": "a", "output": 3}'], r"bad.jsonl:line 1: 'output' must be a string, got int"),
        (['{"instruction": "a", "input": ["x"], "output": "b"}'], r"line 1: 'input' must be a string, got list"),
        (['{"instruction": " ", "output": "b"}'], r"line 1: 'instruction' is empty"),
        (['["instruction", "output"]'], r"line 1: expected a JSON object"),
        ([""], r"bad.jsonl: no records"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, lines, pattern):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=pattern):
        read_instructions(path)


def test_bad_json_array_names_record(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "a", "response": "b"}]))
    with pytest.raises(DataError, match=r"bad.json:record 1: missing key 'output'"):
        read_instructions(path)
    path.write_text('[{"instruction": "a",\n "output": "b"},\n oops]')
    with pytest.raises(DataError, match=r"bad.json:line 3: invalid JSON"):
        read_instructions(path)
    path.write_text('{"instruction": "a", "output": "b"}')
    with pytest.raises(DataError, match=r"expected a JSON array"):
        read_instructions(path)


def test_unknown_suffix_missing_and_empty_files(tmp_path, tokenizer):
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n")
    with pytest.raises(DataError, match=r"data.csv: unknown data format '.csv'"):
        load_examples(csv, tokenizer, 64)
    with pytest.raises(DataError, match=r"nope.jsonl: no such file"):
        load_examples(tmp_path / "nope.jsonl", tokenizer, 64)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match=r"empty.txt: the text file is empty"):
        load_examples(empty, tokenizer, 64)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(DataError, match=r"binary.txt: not UTF-8"):
        load_examples(binary, tokenizer, 64)
