"""benchmarks/quanta.py runs end to end at smoke size and prints every ratio it promises."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[1]


def test_quanta_benchmark_smoke():
    out = subprocess.run([sys.executable, "benchmarks/quanta.py", "--quick"], cwd=REPO, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    for label in ("QuanTA / LoRA   training step", "QuanTA / base   training step", "merged / base   inference"):
        match = re.search(re.escape(label) + r"\s+([0-9.]+)x", out)
        assert match and float(match.group(1)) > 0, out
    assert "PEFT LoraConfig" in out  # compared with PEFT's LoRA, not the fallback
