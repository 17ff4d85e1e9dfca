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
from contextlib import contextmanager
from pathlib import Path

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
        from torch.utils.cpp_extension import _get_build_directory, load

        name = f"{namespace}_{cpu_tag()}"
        build_dir = Path(_get_build_directory(name, False))
        with build_lock(build_dir):
            load(name=name, sources=[source], build_directory=str(build_dir),
                 extra_cflags=["-O3", "-march=native", "-fopenmp", "-fno-math-errno"], extra_ldflags=["-fopenmp"],
                 is_python_module=False)
        return getattr(torch.ops, namespace)
    except Exception as err:  # noqa: BLE001 - the eager path still works
        warnings.warn(f"{what} is unavailable ({type(err).__name__}: {err}); {fallback}", RuntimeWarning, stacklevel=3)
        return None


@contextmanager
def build_lock(build_dir: Path):
    """Hold an OS lock on the kernel's build folder, and clear a lock file that torch left there.

    torch's own build lock is a plain file that a compile deletes when it ends; a compile that was
    killed (Ctrl-C, a timeout) leaves it behind, and every later build of that kernel then waits on
    it forever. Every ho-co build of a kernel takes this `flock` first, which the OS releases when
    its holder dies: whoever holds it is the only builder, so a torch lock file found then is a
    leftover, and is removed (with a warning) instead of waited on."""
    import fcntl  # POSIX: the kernels are built for Linux CPUs

    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / "ho_co.flock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            stale = build_dir / "lock"
            if stale.exists():
                warnings.warn(f"{stale}: removed a build lock left by an interrupted compile", RuntimeWarning,
                              stacklevel=3)
                stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
