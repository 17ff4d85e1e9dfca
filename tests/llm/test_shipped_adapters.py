"""The shipped SmolLM2 adapters are the experiment's seed-0 runs at 1e-3: what README's lm-eval line
scores. Checked from the files alone (loading the 135M model belongs to `ho-co lm-eval`)."""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ho_co.llm.models import read_meta

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks/results/llm/experiment/adapters_1e-3"
WEIGHTS = {"lora-8": "adapter_model.safetensors", "lora-qp": "adapter_model.safetensors",
           "quanta": "quanta_adapter/adapter_model.safetensors"}


def _run(label: str) -> dict:
    runs = [json.loads(line) for line in (RESULTS / "results.jsonl").read_text().splitlines()]
    (run,) = [r for r in runs if r["label"] == label and r["seed"] == 0]
    return run


@pytest.mark.parametrize("label", sorted(WEIGHTS))
def test_a_shipped_adapter_is_its_runs_method_and_size(label):
    folder = REPO / "checkpoints/llm" / label
    run, meta = _run(label), read_meta(folder)
    assert run["lr"] == 1e-3 and meta["base_model"] == "smollm2-135m" and not meta["merged"]
    assert meta["method"] == run["method"] and meta["spec"] == run["spec"]
    tensors = load_file(folder / WEIGHTS[label])
    trained = sum(t.numel() for name, t in tensors.items() if "lora_" in name or "quanta_T" in name)
    assert trained == run["trainable_parameters"]
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 32 * 2**20


def test_quanta_ships_its_frozen_copy_beside_every_gate():
    tensors = load_file(REPO / "checkpoints/llm/quanta" / WEIGHTS["quanta"])
    gates = {name.replace("quanta_T", "quanta_S") for name in tensors if "quanta_T" in name}
    frozen = {name for name in tensors if "quanta_S" in name}
    assert gates == frozen and len(gates) == 6 * 7 * 30  # 6 gates, 7 layers a block, 30 blocks
