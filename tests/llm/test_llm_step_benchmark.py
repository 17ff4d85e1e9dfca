"""benchmarks/llm_step.py runs end to end (on the tiny GGUF LLaMA) and prints every ratio it promises."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_llm_step_benchmark_smoke(gguf_source, gguf_cache, tmp_path):
    path, _ = gguf_source
    out = subprocess.run([sys.executable, "benchmarks/llm_step.py", "--model", str(path), "--quick", "--threads", "1",
                          "--json", str(tmp_path / "steps.json")], cwd=REPO, capture_output=True, text=True,
                         timeout=600, check=True).stdout
    result = json.loads((tmp_path / "steps.json").read_text())
    cases = result["cases"]
    assert list(cases) == ["full", "c2q-2", "c2q-4", "lora-8", "lora-qp", "quanta"], out
    assert all(case["seconds"] > 0 and case["ratio_to_lora_qp"] > 0 for case in cases.values())
    assert cases["lora-qp"]["ratio_to_lora_qp"] == 1.0
    assert cases["c2q-2"]["ratio_to_full"] > 0 and cases["quanta"]["ratio_to_full"] is None
    assert cases["full"]["trainable_parameters"] > cases["lora-8"]["trainable_parameters"] > 0
    assert f"lora-qp: rank {result['lora_qp_rank']} for QuanTA's" in out
