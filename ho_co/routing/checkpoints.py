"""Weights-only checkpoints: what ships with a trained model.

`export_weights` keeps the policy weights (bf16 by default), the hyperparameters, the run
config and the learning curve (how much training the weights had), and drops the optimizer and
loop state. `ho-co eval` reads it like any checkpoint (weights cast back to float32 on load), and
`model.policy.init_from=FILE` warm-starts a new run from it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

DROPPED_FOR_WEIGHTS = ("optimizer_states", "lr_schedulers", "loops", "callbacks")


def _load(source: str | Path | io.BytesIO, where: str | Path | None = None) -> dict[str, Any]:
    """A Lightning checkpoint dict from a file or an in-memory buffer (`where` names it)."""
    where = where or source
    if not isinstance(source, io.BytesIO) and not Path(source).is_file():
        raise FileNotFoundError(f"checkpoint not found: {where}")
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{where} is not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


def _cast_floats(tree: Any, dtype: torch.dtype, min_dim: int = 0) -> Any:
    """Floating tensors with >= min_dim dims in a nested dict/list cast to `dtype`."""
    if isinstance(tree, torch.Tensor):
        return tree.to(dtype) if tree.is_floating_point() and tree.dim() >= min_dim else tree
    if isinstance(tree, dict):
        return {key: _cast_floats(value, dtype, min_dim) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_cast_floats(value, dtype, min_dim) for value in tree)
    return tree


def export_weights(checkpoint_path: str | Path, out: str | Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Weights-only copy of a training checkpoint, floating weights stored as `dtype`."""
    checkpoint = _load(checkpoint_path)
    slim = {key: value for key, value in checkpoint.items() if key not in DROPPED_FOR_WEIGHTS}
    slim["state_dict"] = _cast_floats(checkpoint["state_dict"], dtype)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, out)
    return out
