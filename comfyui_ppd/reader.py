"""Reading checkpoint files safely into a `Checkpoint`, unwrapping `state_dict`/`model`; a .safetensors file's
header alone first (names and shapes), then only the tensors a model needs.

Only `torch.load(weights_only=True)` and safetensors are used: a file that needs code to unpickle
is refused. Every failure is a CheckpointError naming the file, what was expected and what to do.
"""
from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import safe_open
from torch import Tensor

from .checkpoints import DOWNLOAD_HINT, Checkpoint, Source
from .errors import CheckpointError
from .filecheck import check_model_file, loader_reason, read_safetensors_header, redownload_hint


def read_checkpoint(source: Source) -> Checkpoint:
    """Read a path (.safetensors or weights-only .pth/.pt) or a state dict; unwrap `state_dict`/`model`."""
    if isinstance(source, Checkpoint):                 # already read (e.g. built on the meta device)
        return source
    if isinstance(source, Mapping):
        return _unwrap(dict(source), {}, "<state dict>")
    path = Path(source).expanduser()
    if not path.exists():
        raise CheckpointError(path, "a checkpoint file", "no such file", DOWNLOAD_HINT)
    if check_model_file(path) == "safetensors":        # HTML page, LFS pointer, empty, truncated: named here
        return _read_safetensors(path)
    return _read_torch(path)


def read_header(source: Source) -> Checkpoint:
    """As `read_checkpoint`, but a .safetensors file is read from its header alone: `meta` tensors, no data.

    Loaders check names and shapes on these, so a file that claims the wrong shapes is never read whole."""
    path = None if isinstance(source, (Mapping, Checkpoint)) else Path(source).expanduser()
    if path is None or not path.exists() or check_model_file(path) != "safetensors":
        return read_checkpoint(source)
    try:
        header = read_safetensors_header(path)
        metadata = header.pop("__metadata__", None) or {}
        tensors = {k: torch.empty(v["shape"], dtype=_DTYPES[v["dtype"]], device="meta") for k, v in header.items()}
        metadata = {str(k): str(v) for k, v in dict(metadata).items()}
    except Exception as e:  # noqa: BLE001 - a header safetensors itself would refuse: one clear sentence
        raise CheckpointError(path, "a readable safetensors file", f"a damaged header ({loader_reason(e)})",
                              "The download is probably corrupted. " + redownload_hint(path)) from None
    ckpt = _unwrap(tensors, _parsed(metadata, path), str(path))
    ckpt.path = path
    return ckpt


def read_tensors(ckpt: Checkpoint, wanted: Collection[Tensor]) -> Checkpoint:
    """The checkpoint with real data for the `meta` placeholders in `wanted` (the others are left out)."""
    if ckpt.path is None:
        return ckpt
    ids = {id(t) for t in wanted}
    keys = [k for k, v in ckpt.tensors.items() if id(v) in ids]
    return Checkpoint(_read_safetensors(ckpt.path, keys).tensors, ckpt.metadata, ckpt.label)


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def _read_safetensors(path: Path, keys: Iterable[str] | None = None) -> Checkpoint:
    """Every tensor of the file, or only `keys`."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in (f.keys() if keys is None else keys)}
    except Exception as e:  # noqa: BLE001 - whatever safetensors raises, the user gets one clear sentence
        raise CheckpointError(path, "a readable safetensors file", f"a damaged file ({loader_reason(e)})",
                              "The download is probably truncated or corrupted. " + redownload_hint(path)) from None
    return _unwrap(tensors, _parsed(metadata, path), str(path))


def _parsed(metadata: dict, path: Path) -> dict:
    """The metadata with MoGe's `model_config` parsed; text that is not a JSON object is a CheckpointError."""
    if "model_config" not in metadata:
        return metadata
    fix = ("The file's metadata is damaged (or was edited by hand); convert the original model again with "
           "`python -m comfyui_ppd convert`, or: " + redownload_hint(path))
    try:
        config = json.loads(metadata["model_config"])
    except RecursionError:
        raise CheckpointError(path, "`model_config` metadata as a JSON object", "JSON nested too deeply to read",
                              fix) from None
    except ValueError as e:
        raise CheckpointError(path, "`model_config` metadata as a JSON object", f"text that is not JSON ({e})",
                              fix) from None
    if not isinstance(config, dict):
        raise CheckpointError(path, "`model_config` metadata as a JSON object", f"a JSON {type(config).__name__}",
                              fix)
    return {**metadata, "model_config": config}


def _read_torch(path: Path) -> Checkpoint:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        if "global" not in str(e).lower():                 # a damaged pickle, not one that imports code
            raise CheckpointError(path, "a complete PyTorch checkpoint", f"a damaged file ({loader_reason(e)})",
                                  "The download is probably truncated or corrupted. " + redownload_hint(path)) from None
        raise CheckpointError(path, "plain tensors (a weights-only loadable checkpoint)",
                              f"a pickle that needs code to load ({loader_reason(e)})",
                              "For safety this pack never runs code from model files. Use the official "
                              "release file, or convert it on a trusted machine to .safetensors.") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types (IndexError on text); never show them raw
        raise CheckpointError(path, "a complete PyTorch checkpoint", f"an unreadable file ({loader_reason(e)})",
                              "The download is probably truncated or corrupted. " + redownload_hint(path)) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, "a dict of tensors", f"a {type(obj).__name__}", DOWNLOAD_HINT)
    return _unwrap(dict(obj), {}, str(path))


def _unwrap(obj: dict, metadata: dict, label: str) -> Checkpoint:
    """Follow `state_dict` / `model` nesting; keep a MoGe `model_config` next to `model` as metadata."""
    for key in ("state_dict", "model"):
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            if isinstance(obj.get("model_config"), Mapping):
                metadata = {**metadata, "model_config": dict(obj["model_config"])}
            return _unwrap(dict(inner), metadata, label)
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    return Checkpoint(tensors, metadata, label)
