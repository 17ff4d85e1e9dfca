"""benchmarks/subnormals.py runs both arms end to end at smoke size and prints every ratio it promises."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_subnormal_benchmark_runs_both_arms_and_they_decode_the_same_tours():
    out = subprocess.run([sys.executable, "benchmarks/subnormals.py", "--checkpoint", "checkpoints/ho_matnet_atsp20.ckpt",
                          "--instances", "data/atsp20_heldout.npz", "--count", "4", "--augment", "2", "--steps", "1",
                          "--batch", "2", "--rounds", "1"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    for what in ("decode_ms", "step_s"):
        ratio = re.search(rf"^{what}: flush [\d.]+ .*, keep [\d.]+ .*, keep / flush ([\d.]+)x$", out.stdout, re.M)
        assert ratio and float(ratio.group(1)) > 0, out.stdout
    assert "same tours and lengths: True" in out.stdout
