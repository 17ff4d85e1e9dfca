"""Arithmetic word problems with small numbers, the task of `ho-co llm-experiment`.

Each problem takes two or three steps (addition, subtraction, multiplication by a small factor,
an equal share), every number small (operands at most 40, every result at most 128). The answer
is exact: a whole number. A record is Alpaca-style (ho_co.llm.data): the problem is the `instruction`, and
the `output` is the worked solution, one equation per step, then `Answer: N`:

    {"instruction": "Mia has 7 pears. Leo gives Mia 5 more pears. Then Mia gives 3 pears to Ava.
                     How many pears does Mia have now? End your reply with 'Answer: ' and the number.",
     "input": "",
     "output": "7 + 5 = 12. 12 - 3 = 9. Answer: 9"}

Fine-tuning has to teach the steps and the arithmetic, not only the format: the base
SmolLM2-135M-Instruct gets most of them wrong, even with the answer format stated in the prompt.

`final_answer` reads the answer out of a reply: the number after the last "Answer:", else the
last number in the reply (so a model that ignores the format is still scored on its result).
The metric is the exact match of that number, generated greedily in the model's chat template
(`ho_co.llm.lm_eval.exact_match`).

The splits in `data/llm/` come from `write_splits` (seeded; the held-out problems are never in
the training split): `python -m ho_co.llm.tasks data/llm`.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

TRAIN_FILE = "arith_train.jsonl"
HELDOUT_FILE = "arith_heldout.jsonl"
VAL_FILE = "arith_val.jsonl"
ANSWER_PROMPT = "End your reply with 'Answer: ' and the number."

NAMES = ["Mia", "Leo", "Ava", "Sam", "Zoe", "Ben", "Ivy", "Max", "Lily", "Tom", "Nora", "Eli", "Ruby", "Jack",
         "Emma", "Noah", "Lucy", "Owen", "Ella", "Finn"]
ITEMS = ["apples", "pears", "stickers", "marbles", "pencils", "cookies", "stamps", "shells", "cards", "beads",
         "eggs", "books", "coins", "flowers", "toy cars", "balloons"]
CONTAINERS = ["bags", "boxes", "packs", "jars", "baskets"]

_NUMBER = re.compile(r"-?\d+")
_ANSWER = re.compile(r"answer\s*(?:is)?\s*[:=]?\s*\$?\s*(-?\d+)", re.IGNORECASE)


def final_answer(text: str) -> str | None:
    """The number a reply ends on: after the last "Answer:" (or "answer is"), else the last
    number in it; None when it has no number."""
    found = _ANSWER.findall(text)
    if found:
        return str(int(found[-1]))
    numbers = _NUMBER.findall(text)
    return str(int(numbers[-1])) if numbers else None


def _add_then_give(rng: random.Random) -> tuple[str, list[str], int]:
    a, b = rng.randint(3, 20), rng.randint(2, 20)
    c = rng.randint(1, a + b - 1)
    x, y, z = rng.sample(NAMES, 3)
    item = rng.choice(ITEMS)
    text = (f"{x} has {a} {item}. {y} gives {x} {b} more {item}. Then {x} gives {c} {item} to {z}. "
            f"How many {item} does {x} have now?")
    return text, [f"{a} + {b} = {a + b}", f"{a + b} - {c} = {a + b - c}"], a + b - c


def _packs_then_eat(rng: random.Random) -> tuple[str, list[str], int]:
    n, k = rng.randint(2, 9), rng.randint(2, 12)
    c = rng.randint(1, n * k - 1)
    x = rng.choice(NAMES)
    item, box = rng.choice(ITEMS), rng.choice(CONTAINERS)
    text = (f"{x} buys {n} {box} of {item}. Each of the {box} holds {k} {item}. {x} gives away {c} of them. "
            f"How many {item} does {x} have left?")
    return text, [f"{n} * {k} = {n * k}", f"{n * k} - {c} = {n * k - c}"], n * k - c


def _boxes_plus_loose(rng: random.Random) -> tuple[str, list[str], int]:
    n, k, c = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 20)
    x = rng.choice(NAMES)
    item, box = rng.choice(ITEMS), rng.choice(CONTAINERS)
    text = (f"{x} has {n} {box} with {k} {item} in each, and {c} more {item} on the table. "
            f"How many {item} does {x} have in total?")
    return text, [f"{n} * {k} = {n * k}", f"{n * k} + {c} = {n * k + c}"], n * k + c


def _spend_twice(rng: random.Random) -> tuple[str, list[str], int]:
    b, c = rng.randint(1, 20), rng.randint(1, 20)
    a = rng.randint(b + c, 40)
    x = rng.choice(NAMES)
    first, second = rng.sample(["a book", "lunch", "a toy", "a ticket", "paint", "a plant", "a hat"], 2)
    text = (f"{x} has {a} dollars. {x} spends {b} dollars on {first} and {c} dollars on {second}. "
            f"How many dollars does {x} have left?")
    return text, [f"{a} - {b} = {a - b}", f"{a - b} - {c} = {a - b - c}"], a - b - c


def _more_than_together(rng: random.Random) -> tuple[str, list[str], int]:
    a, b = rng.randint(2, 20), rng.randint(1, 20)
    x, y = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    text = (f"{x} has {a} {item}. {y} has {b} more {item} than {x}. "
            f"How many {item} do {x} and {y} have together?")
    return text, [f"{a} + {b} = {a + b}", f"{a} + {a + b} = {2 * a + b}"], 2 * a + b


def _share_then_more(rng: random.Random) -> tuple[str, list[str], int]:
    n, k, b = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 20)
    x = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    text = (f"{x} shares {n * k} {item} equally among {n} friends. Then each friend gets {b} more {item}. "
            f"How many {item} does each friend have now?")
    return text, [f"{n * k} / {n} = {k}", f"{k} + {b} = {k + b}"], k + b


def _twice_then_more(rng: random.Random) -> tuple[str, list[str], int]:
    a, c = rng.randint(2, 20), rng.randint(1, 20)
    x = rng.choice(NAMES)
    text = (f"{x} reads {a} pages on Monday and twice as many pages on Tuesday. On Wednesday {x} reads {c} "
            f"pages. How many pages does {x} read in the three days?")
    return text, [f"2 * {a} = {2 * a}", f"{a} + {2 * a} = {3 * a}", f"{3 * a} + {c} = {3 * a + c}"], 3 * a + c


def _buy_bags_give(rng: random.Random) -> tuple[str, list[str], int]:
    a, n, k = rng.randint(1, 20), rng.randint(2, 6), rng.randint(2, 9)
    c = rng.randint(1, a + n * k - 1)
    x = rng.choice(NAMES)
    item, box = rng.choice(ITEMS), rng.choice(CONTAINERS)
    text = (f"{x} has {a} {item}. {x} buys {n} {box} with {k} {item} in each, then gives away {c} {item}. "
            f"How many {item} does {x} have now?")
    steps = [f"{n} * {k} = {n * k}", f"{a} + {n * k} = {a + n * k}", f"{a + n * k} - {c} = {a + n * k - c}"]
    return text, steps, a + n * k - c


TEMPLATES = (_add_then_give, _packs_then_eat, _boxes_plus_loose, _spend_twice, _more_than_together,
             _share_then_more, _twice_then_more, _buy_bags_give)


def make_problem(rng: random.Random) -> dict[str, str]:
    """One problem as an Alpaca record (`instruction`, `input`, `output`)."""
    text, steps, answer = rng.choice(TEMPLATES)(rng)
    assert answer >= 0 and steps[-1].endswith(f"= {answer}")
    return {"instruction": f"{text} {ANSWER_PROMPT}", "input": "", "output": ". ".join(steps) + f". Answer: {answer}"}


def make_problems(n: int, seed: int, exclude: set[str] = frozenset()) -> list[dict[str, str]]:
    """`n` distinct problems from `seed`, none with an instruction in `exclude`."""
    rng = random.Random(seed)
    seen, problems = set(exclude), []
    while len(problems) < n:
        record = make_problem(rng)
        if record["instruction"] not in seen:
            seen.add(record["instruction"])
            problems.append(record)
    return problems


def write_jsonl(records: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(path)
    return path


def write_splits(out_dir: str | Path, n_train: int = 1000, n_heldout: int = 200, seed: int = 0,
                 n_val: int = 100) -> tuple[Path, Path, Path]:
    """The training split (seed `seed`), the held-out split (seed `seed + 1`) and the validation
    split (seed `seed + 2`), no problem in two of them, as JSONL files `TRAIN_FILE`, `HELDOUT_FILE`
    and `VAL_FILE` in `out_dir`. Choices (learning rates, steps) are read off the validation
    split, so that the held-out split stays a test set."""
    train = make_problems(n_train, seed)
    seen = {r["instruction"] for r in train}
    heldout = make_problems(n_heldout, seed + 1, exclude=seen)
    val = make_problems(n_val, seed + 2, exclude=seen | {r["instruction"] for r in heldout})
    out = Path(out_dir)
    return (write_jsonl(train, out / TRAIN_FILE), write_jsonl(heldout, out / HELDOUT_FILE),
            write_jsonl(val, out / VAL_FILE))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="write the arithmetic task's train, held-out and validation splits")
    parser.add_argument("out_dir", nargs="?", default="data/llm")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--heldout", type=int, default=200)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for written in write_splits(args.out_dir, args.train, args.heldout, args.seed, args.val):
        print(written)
