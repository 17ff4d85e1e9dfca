"""Plain-torch layers, usable in any model: no rl4co, no transformers imports here."""

from ho_co.layers.holinear import HOLinear, chunk_sizes

__all__ = ["HOLinear", "chunk_sizes"]
