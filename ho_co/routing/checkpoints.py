"""Every read of a `ho-co train` checkpoint, and the `ho_co` record inside it.

A checkpoint is read with `torch.load(weights_only=True)`: tensors and plain containers only, so
loading a file never runs code. A file that needs pickle (an object that is not a tensor or a
plain container) is refused; for a file the user trusts, `convert_trusted` rewrites it once as
plain data (`ho-co checkpoint convert --trust IN OUT`).

Inside a Lightning checkpoint ho-co keeps one entry, `checkpoint["ho_co"]`:
    version   the ho-co version that wrote it
    config    the resolved run config as plain containers (env, model.policy, ...): enough to
              rebuild the policy without the run's config files
    training  the learning curve: {"instances_seen", "wall_s", "curve": [rows]}, how much
              training the weights had

`export_weights` keeps the policy weights (bf16 by default), the hyperparameters and that entry,
and drops the optimizer and loop state: the file that ships with a trained model.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

SCHEMA_KEY = "ho_co"
DROPPED_FOR_WEIGHTS = ("optimizer_states", "lr_schedulers", "loops", "callbacks")
PLAIN_SCALARS = (str, int, float, bool, type(None), torch.Tensor, torch.dtype, torch.Size)


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """The checkpoint dict in `path`, loaded without running code; `what` names the file's role
    in the error messages (e.g. "init_from checkpoint")."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise ValueError(f"{what} {path} is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {path} is empty (0 bytes)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Weights only" in str(err):
            raise ValueError(
                f"{what} {path} holds objects that only pickle can load, and loading it could run code: "
                f"refused. If you trust the file, convert it once: ho-co checkpoint convert --trust {path} OUT.ckpt"
            ) from err
        raise ValueError(f"{what} {path} is corrupt or not a checkpoint ({_first_line(err)})") from err
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, AttributeError) as err:
        raise ValueError(f"{what} {path} is corrupt or truncated ({_first_line(err)})") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{what} {path} is not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with every read through `read_checkpoint`: resuming a run never
    unpickles code either."""

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return read_checkpoint(path, "ckpt_path")


def run_config(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The run config stored by `ho-co train`; its absence means the file came from elsewhere."""
    config = checkpoint.get(SCHEMA_KEY, {}).get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a ho-co checkpoint (no '{SCHEMA_KEY}' config inside); train it with `ho-co train`")
    return config


def training_record(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The learning curve the weights carry (None for a checkpoint without one)."""
    return checkpoint.get(SCHEMA_KEY, {}).get("training")


def policy_weights(checkpoint: dict[str, Any], path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The `policy.*` weights (prefix removed) and the HO settings stored with them (None: plain,
    or no ho-co config). HOLinear keeps nn.Linear's parameter names, so only the stored config
    tells an HO policy from a plain one."""
    state = checkpoint["state_dict"]
    weights = {k[len("policy."):]: v for k, v in state.items() if k.startswith("policy.")}
    if not weights:
        raise ValueError(f"{path}: no 'policy.*' weights in the checkpoint")
    stored = checkpoint.get(SCHEMA_KEY, {}).get("config", {}).get("model", {}).get("policy", {})
    return weights, stored.get("ho")


def atomic_save(obj: Any, out: str | Path) -> Path:
    """torch.save to a temporary file beside `out`, then rename: a kill mid-write never leaves a
    truncated file where a good one was."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, out)
    return out


def is_full_checkpoint(checkpoint: dict[str, Any]) -> bool:
    """A training checkpoint (resumable: optimizer and loop state), not a weights-only export."""
    return "optimizer_states" in checkpoint or "loops" in checkpoint


def export_weights(checkpoint_path: str | Path, out: str | Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Weights-only copy of a training checkpoint, floating weights stored as `dtype`."""
    checkpoint = read_checkpoint(checkpoint_path)
    run_config(checkpoint, checkpoint_path)
    slim = {key: value for key, value in checkpoint.items() if key not in DROPPED_FOR_WEIGHTS}
    slim["state_dict"] = _cast_floats(checkpoint["state_dict"], dtype)
    return atomic_save(slim, out)


def convert_trusted(source: str | Path, out: str | Path) -> Path:
    """Rewrite a checkpoint that needs pickle as plain data, for a file the user trusts: it is
    unpickled once (this runs its code), config containers become dicts and lists, the module
    objects rl4co stores as hyperparameters are dropped, and anything else that is not plain
    data is an error naming where it sits. The result loads with `read_checkpoint`."""
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"checkpoint not found: {source}")
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{source} is not a Lightning checkpoint (no 'state_dict')")
    for key in ("env", "policy"):
        checkpoint.get("hyper_parameters", {}).pop(key, None)
    plain = _plain(checkpoint, "checkpoint")
    out = atomic_save(plain, out)
    read_checkpoint(out)  # the promise: it now loads without pickle
    return out


def _plain(tree: Any, where: str) -> Any:
    """`tree` as tensors and plain containers (OmegaConf configs converted), or an error."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(tree, (DictConfig, ListConfig)):
            return OmegaConf.to_container(tree, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        pass
    if isinstance(tree, PLAIN_SCALARS):
        return tree
    if isinstance(tree, dict):
        return {key: _plain(value, f"{where}[{key!r}]") for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_plain(value, f"{where}[{i}]") for i, value in enumerate(tree))
    raise ValueError(f"{where} is a {type(tree).__name__}, not plain data: cannot convert it safely")


def _cast_floats(tree: Any, dtype: torch.dtype, min_dim: int = 0) -> Any:
    """Floating tensors with >= min_dim dims in a nested dict/list cast to `dtype`."""
    if isinstance(tree, torch.Tensor):
        return tree.to(dtype) if tree.is_floating_point() and tree.dim() >= min_dim else tree
    if isinstance(tree, dict):
        return {key: _cast_floats(value, dtype, min_dim) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_cast_floats(value, dtype, min_dim) for value in tree)
    return tree


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
