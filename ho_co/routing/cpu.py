"""CPU settings for training: how many threads one training process uses, and its heap.

POMO training of MatNet on a CPU is a stream of small kernels (the decoding steps) between
medium GEMMs (the encoder). A training alone on the machine gains from every core it may run
on; several trainings side by side must each keep to their own cores, since OpenMP threads
that wait on a busy core lose far more than they gain. So the default is the number of cores
this process may run on (its CPU affinity: all of them, or the one `taskset -c N` pins it to),
or OMP_NUM_THREADS where the environment sets it. BENCHMARKS.md has the measurements.

A training step also allocates and frees the same activation-sized tensors every step. glibc's
malloc serves large blocks from fresh mmap pages and returns them when freed, so each step
page-faults its whole working set again (about 50,000 faults per TSP-50 step); `keep_freed_memory`
has malloc keep and reuse them instead.

Decoding also makes subnormal floats (probabilities and gradients that underflow toward zero).
Some x86 cores take a slow microcode path for every subnormal operand: on a Xeon, an ATSP-50
decode ran 2.6 times slower with them than with `flush_denormals`, a training step 2.8 times,
on the same tours (BENCHMARKS.md). Values that small carry nothing a tour or a gradient needs.
`ho-co train` and `ho-co eval` apply both settings through `settle_cpu_process`.
"""

from __future__ import annotations

import ctypes
import os

import torch


def default_threads() -> int:
    """OMP_NUM_THREADS if set, else the cores this process may run on."""
    if os.environ.get("OMP_NUM_THREADS"):
        return int(os.environ["OMP_NUM_THREADS"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEEP_FREED_BYTES = 1 << 30  # freed memory kept for reuse before malloc trims the heap


def keep_freed_memory() -> bool:
    """Serve every allocation from malloc's heap and keep up to 1 GiB of freed memory there, so
    a step reuses the pages the last step freed (no mmap per large tensor, no page faults on
    reuse). The heap then stays at its peak size. Returns whether it applied (glibc only)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): the platform's allocator as it is
        return False
    if not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


def flush_denormals() -> bool:
    """Treat subnormal floats as zero on this CPU (torch.set_flush_denormal: x86 FTZ/DAZ), so
    no operation takes the slow subnormal path. Returns whether the CPU supports it."""
    return torch.set_flush_denormal(True)


def settle_cpu_process() -> None:
    """The process settings `ho-co train` and `ho-co eval` use on a CPU: the kept heap and
    flushed subnormals."""
    keep_freed_memory()
    flush_denormals()


def runs_on_cpu(device: str) -> bool:
    """Whether a Lightning accelerator setting means training on this CPU."""
    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def set_cpu_threads(threads: int | None = None, device: str = "cpu") -> int:
    """Set torch's intra-op threads for CPU training and return the count in use.

    threads: a count, 0 or None for the default (`default_threads`). Nothing changes for GPU
    training (a device other than cpu, or auto with a GPU), where host threads only feed it.
    """
    if not runs_on_cpu(device):
        return torch.get_num_threads()
    if not threads:
        threads = default_threads()
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads
