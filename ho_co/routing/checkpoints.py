"""Checkpoint files that fit where they must travel.

Two needs, two formats, both plain Lightning checkpoint dicts:

- `export_weights`: what ships in the repo (<= 16 MB): the policy weights (bf16 by default),
  the hyperparameters and the run config, no optimizer or loop state. `ho-co eval` reads it
  on CPU like any checkpoint; the weights are cast back to the model's dtype on load.
- `pack` / `unpack`: a full training checkpoint split into parts small enough to come back
  from the GPU machine (its files return at most 16 MiB each), with Adam's moments stored in
  bf16 so a 5.5M-parameter MatNet's resume state fits in ~45 MB. Unpacking casts them back to
  float32; resuming from it continues the same run (step count, schedules, timer).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

PART_SUFFIX = ".part"
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


def _cast_optimizer_moments(checkpoint: dict[str, Any], dtype: torch.dtype) -> None:
    """Adam's moments to `dtype`, in place; scalar state (Adam's float `step`) stays exact."""
    checkpoint["optimizer_states"] = [
        {**state, "state": _cast_floats(state.get("state", {}), dtype, min_dim=1)}
        for state in checkpoint.get("optimizer_states", [])
    ]


def export_weights(checkpoint_path: str | Path, out: str | Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Weights-only copy of a training checkpoint, floating weights stored as `dtype`."""
    checkpoint = _load(checkpoint_path)
    slim = {key: value for key, value in checkpoint.items() if key not in DROPPED_FOR_WEIGHTS}
    slim["state_dict"] = _cast_floats(checkpoint["state_dict"], dtype)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, out)
    return out


def pack(checkpoint_path: str | Path, out_dir: str | Path, part_mib: int = 15) -> list[Path]:
    """Split a training checkpoint (optimizer moments in bf16) into parts of <= part_mib MiB."""
    checkpoint = _load(checkpoint_path)
    _cast_optimizer_moments(checkpoint, torch.bfloat16)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"*{PART_SUFFIX}*"):
        old.unlink()
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    data = buffer.getvalue()
    size = part_mib * 2**20
    parts = []
    for index in range(0, max(len(data), 1), size):
        part = out_dir / f"resume{PART_SUFFIX}{index // size:02d}"
        part.write_bytes(data[index : index + size])
        parts.append(part)
    return parts


def unpack(parts_dir: str | Path, out: str | Path) -> Path:
    """Join the parts written by `pack` into a checkpoint Lightning can resume from."""
    parts = sorted(Path(parts_dir).glob(f"resume{PART_SUFFIX}*"))
    if not parts:
        raise FileNotFoundError(f"no resume{PART_SUFFIX}NN files in {parts_dir}")
    expected = [f"resume{PART_SUFFIX}{i:02d}" for i in range(len(parts))]
    if [p.name for p in parts] != expected:
        raise ValueError(f"{parts_dir}: checkpoint parts are not consecutive: {[p.name for p in parts]}")
    checkpoint = _load(io.BytesIO(b"".join(p.read_bytes() for p in parts)), where=parts_dir)
    _cast_optimizer_moments(checkpoint, torch.float32)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out)
    return out
