"""CPU settings for training: how many threads one training process uses.

POMO training of MatNet on a CPU is a stream of small kernels (the decoding steps) between
medium GEMMs (the encoder); small kernels barely gain from a second thread, and OpenMP threads
that wait on a busy core lose a lot. The default is one thread per training process (run one
training per core, pinned with taskset); `benchmarks/cpu_threads.py` measures one training on
all cores against one per core.
"""

from __future__ import annotations

import os

import torch

DEFAULT_THREADS = 1  # per training process on a CPU; see the module docstring


def set_cpu_threads(threads: int | None = None, device: str = "cpu") -> int:
    """Set torch's intra-op threads for CPU training and return the count in use.

    threads: a count, 0 or None for the default (DEFAULT_THREADS, or OMP_NUM_THREADS when the
    environment sets it). Nothing changes for GPU training (device other than cpu/auto without
    a GPU), where the host threads only feed the device.
    """
    if device not in ("cpu", "auto") or (device == "auto" and torch.cuda.is_available()):
        return torch.get_num_threads()
    if not threads:
        threads = int(os.environ.get("OMP_NUM_THREADS") or DEFAULT_THREADS)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads
