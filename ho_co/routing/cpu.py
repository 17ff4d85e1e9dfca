"""CPU settings for training: how many threads one training process uses.

POMO training of MatNet on a CPU is a stream of small kernels (the decoding steps) between
medium GEMMs (the encoder). A training alone on the machine gains from every core it may run
on; several trainings side by side must each keep to their own cores, since OpenMP threads
that wait on a busy core lose far more than they gain. So the default is the number of cores
this process may run on (its CPU affinity: all of them, or the one `taskset -c N` pins it to),
or OMP_NUM_THREADS where the environment sets it. BENCHMARKS.md has the measurements.
"""

from __future__ import annotations

import os

import torch


def default_threads() -> int:
    """OMP_NUM_THREADS if set, else the cores this process may run on."""
    if os.environ.get("OMP_NUM_THREADS"):
        return int(os.environ["OMP_NUM_THREADS"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_cpu_threads(threads: int | None = None, device: str = "cpu") -> int:
    """Set torch's intra-op threads for CPU training and return the count in use.

    threads: a count, 0 or None for the default (`default_threads`). Nothing changes for GPU
    training (a device other than cpu, or auto with a GPU), where host threads only feed it.
    """
    if device not in ("cpu", "auto") or (device == "auto" and torch.cuda.is_available()):
        return torch.get_num_threads()
    if not threads:
        threads = default_threads()
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads
