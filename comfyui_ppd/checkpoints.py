"""State dicts, family-agnostic: the `Checkpoint` holder, finding prefixes, counting blocks, loading strictly.

Reading a file into a `Checkpoint` is reader.py (it checks the file first, which needs the catalogue).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import CheckpointError

DOWNLOAD_HINT = ("Download the official files with `python -m comfyui_ppd download` or see the model "
                 "table in the README.")


class Checkpoint:
    """A loaded state dict (CPU tensors), its metadata and a label for messages.

    From `read_header`, a .safetensors file's tensors are `meta` placeholders (names, shapes, dtypes) and `path`
    is set: `read_tensors` reads the data of the ones a model needs."""

    def __init__(self, tensors: dict[str, Tensor], metadata: dict, label: str, path: Path | None = None) -> None:
        self.tensors, self.metadata, self.label, self.path = tensors, metadata, label, path


Source = str | Path | Mapping | Checkpoint       # a file, a state dict, or one already read


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
