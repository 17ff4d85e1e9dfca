"""Plain-torch layers, usable in any model: no rl4co, no transformers imports here."""

from ho_co.layers.holinear import HOLinear, chunk_sizes
from ho_co.layers.quanta import QuanTALinear

__all__ = ["HOLinear", "QuanTALinear", "chunk_sizes"]
