import os
import platform
import subprocess
import sys

import pytest
import torch

from ho_co.routing.cpu import set_cpu_threads

PROBE = "from ho_co.routing.cpu import set_cpu_threads; print(set_cpu_threads(None, 'cpu'))"


def threads_in(env_update, pin=None):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | env_update
    command = [sys.executable, "-c", PROBE]
    if pin is not None:
        command = ["taskset", "-c", pin, *command]
    return int(subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to tell pinned from free")
def test_default_threads_follow_the_cores_a_training_may_run_on():
    assert threads_in({}) == len(os.sched_getaffinity(0))
    assert threads_in({}, pin="0") == 1  # a training pinned beside another keeps to its core
    assert threads_in({"OMP_NUM_THREADS": "1"}) == 1


def test_an_explicit_count_wins_and_a_bad_one_is_refused():
    before = torch.get_num_threads()
    try:
        assert set_cpu_threads(1, "cpu") == 1 and torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads must be >= 1"):
            set_cpu_threads(-2, "cpu")
    finally:
        torch.set_num_threads(before)


FAULTS_PROBE = """
import resource, sys, torch
from ho_co.routing.cpu import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
weight = torch.randn(256, 256, requires_grad=True)
def faults_of_one_step():  # 40 MB activations made and freed, as in every training step
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    (torch.randn(40000, 256) @ weight).relu().sum().backward()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(kept, *[faults_of_one_step() for _ in range(12)])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    def faults_per_step(mode):
        out = subprocess.run([sys.executable, "-c", FAULTS_PROBE, mode], capture_output=True, text=True, check=True,
                             env=os.environ | {"OMP_NUM_THREADS": "1"})
        kept, *counts = out.stdout.split()
        return kept == "True", [int(count) for count in counts]

    kept, reused = faults_per_step("keep")
    _, default = faults_per_step("default")
    assert kept, "keep_freed_memory did not apply on glibc"
    # The kept heap grows to its peak over the first steps (fragmentation decides how fast), then
    # a step faults nothing in; glibc's default maps and faults every 40 MB block in each step.
    # Measured: kept 40,000 falling to 0 (an occasional 10,000), default 40,000 every step.
    assert min(reused[4:]) * 10 < min(default[4:]), (reused, default)
    assert 2 * sum(reused) < sum(default), (reused, default)


SUBNORMAL_PROBE = """
import sys, torch
from ho_co.routing.cpu import flush_denormals
flushed = flush_denormals() if sys.argv[1] == "flush" else False
print(flushed, (torch.tensor([1e-39]) * 2.0).item())
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="FTZ/DAZ are x86 flags")
def test_subnormals_are_flushed_to_zero():
    def run(mode):
        out = subprocess.run([sys.executable, "-c", SUBNORMAL_PROBE, mode], capture_output=True, text=True,
                             check=True).stdout.split()
        return out[0] == "True", float(out[1])

    flushed, value = run("flush")
    assert flushed and value == 0.0
    assert run("keep")[1] > 0  # the default keeps them
