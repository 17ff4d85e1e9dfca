"""ho-co: quantum-inspired high-order layers for neural combinatorial optimization."""

from ho_co.layers import HOLinear, QuanTALinear
from ho_co.replace import ReplaceReport, replace_linear

__version__ = "0.1.0"
__all__ = ["HOLinear", "QuanTALinear", "ReplaceReport", "replace_linear", "__version__"]
