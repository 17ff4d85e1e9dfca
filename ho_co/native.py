"""The package's C++ CPU kernels: built for this CPU at first use, cached per CPU kind.

Each kernel is one .cpp file beside the module that uses it, compiled by torch.utils.cpp_extension
with the system's C++ compiler for the host's instruction set (-march=native: AVX2 and FMA where
the CPU has them) and cached by torch. The cache name carries a tag of the CPU's instruction-set
flags, so machines of different kinds sharing a cache each get their own build. Torch only, so
`ho_co.layers` may use it.
"""

from __future__ import annotations

import hashlib
import os
import warnings

import torch


def cpu_tag() -> str:
    """A short tag of this CPU's instruction-set flags (/proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


def build_kernel(source: str, namespace: str, switch: str, what: str, fallback: str):
    """Compile `source` (which registers the torch.ops `namespace`) for this CPU, cached, and return
    that namespace; or None when the environment variable `switch` is "0" (the eager path, for A/B
    runs), or, with a warning naming `what` is unavailable and the `fallback` used instead, when it
    cannot be built (no compiler, no headers, a build error)."""
    if os.environ.get(switch, "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load

        load(name=f"{namespace}_{cpu_tag()}", sources=[source],
             extra_cflags=["-O3", "-march=native", "-fopenmp", "-fno-math-errno"], extra_ldflags=["-fopenmp"],
             is_python_module=False)
        return getattr(torch.ops, namespace)
    except Exception as err:  # noqa: BLE001 - the eager path still works
        warnings.warn(f"{what} is unavailable ({type(err).__name__}: {err}); {fallback}", RuntimeWarning, stacklevel=3)
        return None
