"""What a model file holds, told from its keys without loading its weights: its slot (DiT / encoder / ...), its
families and its semantics, all as the families declare them.

Safetensors: the JSON header alone. Zip .pth/.pt (every torch.save since 1.6): `torch.load(mmap=True,
weights_only=True)` reads the pickle and maps the data lazily, so no tensor is read. Legacy (non-zip)
pickles and unreadable files are "unknown" (the loader says what is wrong with them). Results are cached
per (path, mtime, size), so a dropdown refresh re-reads only new or changed files.
"""
from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from . import registry
from .filecheck import MAX_HEADER_BYTES, MAX_TENSORS, parse_header


@dataclass(frozen=True)
class FileKind:
    """slot: the best family's slot (family.SLOTS), "" for a foreign model, None (unknown); the best family's
    name; semantics and its source; every family that recognises the keys (a full MoGe-2 file is both a
    geometry model and an encoder)."""

    slot: str | None
    family: str | None = None
    semantics: str | None = None          # e.g. the encoder's, or the one a DiT was trained with
    semantics_source: str = ""            # "metadata" | "keys" | "file name" | ""
    families: tuple[str, ...] = ()


_CACHE: dict[tuple[str, int, int], FileKind] = {}


def _safetensors_header(path: Path) -> tuple[list[str], dict]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if not 0 < n <= MAX_HEADER_BYTES:        # refused from the length alone: no 60 MB parse per file
            raise ValueError("bad header length")
        header = parse_header(f.read(n))
    meta = header.pop("__metadata__", None) or {}
    if len(header) > MAX_TENSORS:
        raise ValueError("more tensors than any model")
    return list(header), dict(meta)


def _torch_keys(path: Path) -> tuple[list[str], dict]:
    obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    meta: dict = {}
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError("not a dict of tensors")
    return [k for k in obj if isinstance(k, str)], meta


def _classify(path: Path) -> FileKind:
    try:
        if path.suffix.lower() in (".safetensors", ".sft"):
            keys, meta = _safetensors_header(path)
        elif zipfile.is_zipfile(path):
            keys, meta = _torch_keys(path)
        else:
            return FileKind(None)
    except Exception:  # any unreadable file is "unknown" here; loading it gives the clear error
        return FileKind(None)
    ranked = registry.identify(keys)
    if not ranked:
        return FileKind(None)
    family, names = ranked[0][1], tuple(f.name for _, f in ranked)
    semantics, source = next((s for s in (f.semantics_of(meta, path.name) for _, f in ranked) if s[0]), (None, ""))
    return FileKind(family.slot, family.name, semantics, source, names)


def file_kind(path: str | os.PathLike) -> FileKind:
    """The cached `FileKind` of a model file (unknown when it cannot be read cheaply)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return FileKind(None)
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _CACHE:
        _CACHE[key] = _classify(path)
    return _CACHE[key]


def fits(kind: FileKind, slot: str) -> bool:
    """Whether a file belongs in `slot`'s dropdown: one of its families fills that slot, or it is unknown (a file
    that cannot be read cheaply is listed everywhere; loading it gives the clear error)."""
    return kind.slot is None or any(f.slot == slot for f in registry.families() if f.name in kind.families)


def pairing_note(dit: FileKind, encoder: FileKind, dit_name: str, encoder_name: str) -> str:
    """The DiT family's pairing rule (the one check_pair applies): a sentence when the encoder does not suit it."""
    family = registry.get(dit.family or "")
    if family is None:
        return ""
    return family.pairing(dit.semantics, dit.semantics_source, encoder.semantics, dit_name, encoder_name)
