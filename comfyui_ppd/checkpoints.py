"""Reading checkpoints safely, unwrapping them, finding prefixes and loading strictly (family-agnostic).

Only `torch.load(weights_only=True)` and safetensors are used: a file that needs code to unpickle
is refused. Every failure is a CheckpointError naming the file, what was expected and what to do.
"""
from __future__ import annotations

import json
import pickle
import re
import zipfile
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import safe_open
from torch import Tensor, nn

from .errors import CheckpointError
from .filecheck import check_model_file, loader_reason, read_safetensors_header, redownload_hint

Source = str | Path | Mapping
DOWNLOAD_HINT = ("Download the official files with `python -m comfyui_ppd download` or see the model "
                 "table in the README.")


class Checkpoint:
    """A loaded state dict (CPU tensors), its metadata and a label for messages.

    From `read_header`, a .safetensors file's tensors are `meta` placeholders (names, shapes, dtypes) and `path`
    is set: `read_tensors` reads the data of the ones a model needs."""

    def __init__(self, tensors: dict[str, Tensor], metadata: dict, label: str, path: Path | None = None) -> None:
        self.tensors, self.metadata, self.label, self.path = tensors, metadata, label, path


def read_checkpoint(source: Source) -> Checkpoint:
    """Read a path (.safetensors or weights-only .pth/.pt) or a state dict; unwrap `state_dict`/`model`."""
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
    path = Path(source).expanduser() if not isinstance(source, Mapping) else None
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


def describe(tensors: Mapping[str, Tensor]) -> str:
    """A state dict nobody recognised, for error messages: its size and first keys."""
    keys = list(tensors)
    if not keys:
        return "no tensors at all"
    return f"an unrecognised model ({len(keys)} tensors, e.g. {', '.join(keys[:3])})"


def prefixes_of(keys: Iterable[str], anchor: str) -> list[str]:
    """Every prefix under which `anchor` occurs ("" for the key itself, "dit." for "dit.<anchor>", ...)."""
    return [k[: -len(anchor)] for k in keys if k == anchor or k.endswith("." + anchor)]


def subdict(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors under `prefix`, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def count_blocks(tensors: Mapping[str, Tensor], prefix: str = "blocks.") -> int:
    """1 + the highest index N of keys `<prefix>N.*` (0 when there are none)."""
    idx = {int(m.group(1)) for k in tensors if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


# --- strict loading ----------------------------------------------------------------------------
def check_strict(module: nn.Module, sd: Mapping[str, Tensor], label: str, what: str) -> None:
    """Nothing missing, nothing extra, shapes equal (works on `meta` tensors: no data is needed)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{n} {name}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
                 for name, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                 if (n := len(items))]
        raise CheckpointError(label, what, "; ".join(parts),
                              "The file is incomplete or belongs to another model version; download it again.")


def load_strict(module: nn.Module, sd: Mapping[str, Tensor], label: str, what: str,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load every tensor of the part we build (checked by `check_strict`); then move."""
    check_strict(module, sd, label, what)
    if sd and next(iter(sd.values())).device.type == "meta":
        cast = {k: v.to(dtype=dtype) if v.is_floating_point() else v for k, v in sd.items()}
    else:
        cast = {k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device))
                for k, v in sd.items()}
    module.load_state_dict(cast, strict=True, assign=True)
    return module.eval().requires_grad_(False)
