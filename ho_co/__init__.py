"""ho-co: quantum-inspired high-order layers for neural combinatorial optimization.

The top-level names load lazily, so `import ho_co.solvers` (e.g. in solver worker processes)
does not pay for torch.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "HOLinear": "ho_co.layers",
    "QuanTALinear": "ho_co.layers",
    "ReplaceReport": "ho_co.replace",
    "replace_linear": "ho_co.replace",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ho_co' has no attribute {name!r}")
