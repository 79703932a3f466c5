"""Hostile model files (issue 18): oversized safetensors headers are refused before they are parsed, names and
shapes are checked on the header before any tensor is read, metadata of the wrong types names the file."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file

from comfyui_ppd import filecheck, inventory, loaders
from comfyui_ppd.errors import CheckpointError
from plumbing import fixture_json
from tiny_models import tiny_dit_state_dict


def test_wrong_typed_model_config_values_name_the_file(tmp_path):
    """model_config {"encoder": 5}: an AttributeError deep in the config reader became a clear message."""
    from comfyui_ppd import load_geometry_model
    from tiny_models import tiny_moge2_full_checkpoint
    ckpt = tiny_moge2_full_checkpoint()
    path = tmp_path / "moge2.safetensors"
    save_file({k: v.contiguous() for k, v in ckpt["model"].items()}, str(path),
              metadata={"model_config": json.dumps({"encoder": 5})})
    with pytest.raises(CheckpointError) as info:
        load_geometry_model(path)
    assert str(path) in str(info.value) and "model_config" in str(info.value)


# --- 3. oversized headers refused fast; names and shapes checked before any tensor is read --------------------
def _header_file(path: Path, header: dict, data: int = 0) -> Path:
    raw = json.dumps(header, separators=(",", ":")).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + data)
    return path


def _no_tensor_reads(monkeypatch):
    import comfyui_ppd.reader as reader

    def boom(*a, **k):
        raise AssertionError("tensor data was read")
    monkeypatch.setattr(reader, "safe_open", boom)


def test_header_over_the_size_bound_is_refused_before_parsing(tmp_path, monkeypatch):
    """A header the size a million tensors take (60 MB) is refused from its length alone, in the loader and in
    the dropdown scan (26 s and 5-9 s per file before)."""
    n = 60_000_000
    path = tmp_path / "ppd_huge.safetensors"
    with open(path, "wb") as f:                       # sparse: announces a 60 MB header, a '{' and zeros
        f.write(struct.pack("<Q", n) + b"{")
        f.truncate(8 + n)
    parsed = []
    real_loads = json.loads
    monkeypatch.setattr(json, "loads", lambda *a, **k: parsed.append(1) or real_loads(*a, **k))
    _no_tensor_reads(monkeypatch)
    with pytest.raises(CheckpointError) as info:
        loaders.load(path, ("ppd",), "a PPD DiT", "")
    msg = str(info.value)
    assert str(path) in msg and "60,000,000-byte header" in msg and f"{filecheck.MAX_HEADER_BYTES:,}" in msg, msg
    assert inventory.file_kind(path).slot is None
    assert not parsed


def test_too_many_tensors_are_refused_without_reading_any(tmp_path, monkeypatch):
    """More tensor entries than any real model has (the largest, pi3.safetensors, has 1,210): refused by count,
    in the loader and in the dropdown scan, though the keys include a real DiT's."""
    header = {k: {"dtype": "F32", "shape": list(v.shape), "data_offsets": [0, 0]}
              for k, v in tiny_dit_state_dict().items()}
    header.update({f"junk.{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
                   for i in range(filecheck.MAX_TENSORS + 1)})
    path = _header_file(tmp_path / "ppd_many.safetensors", header)
    _no_tensor_reads(monkeypatch)
    with pytest.raises(CheckpointError) as info:
        loaders.load(path, ("ppd",), "a PPD DiT", "")
    assert f"{len(header):,} tensors" in str(info.value) and str(path) in str(info.value)
    assert inventory.file_kind(path).slot is None


def test_names_and_shapes_are_checked_before_any_tensor_is_read(tmp_path, monkeypatch):
    """A file claiming the DiT's keys with one huge tensor is refused from its header (it was read whole)."""
    sd = tiny_dit_state_dict()
    header, offset = {}, 0
    for k, v in sd.items():
        shape = [1_000_000, 1_000] if k == "dit.blocks.0.attn.qkv.weight" else list(v.shape)
        size = 4 * int(np.prod(shape))
        header[k] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    path = _header_file(tmp_path / "ppd_claims.safetensors", header, data=offset)      # sparse, 4 GB
    _no_tensor_reads(monkeypatch)
    from comfyui_ppd import load_dit
    with pytest.raises(CheckpointError) as info:
        load_dit(path)
    assert "wrong shape" in str(info.value) and "(1000000, 1000)" in str(info.value)


def test_real_checkpoint_key_counts_are_within_the_bounds():
    counts_ = [len(eval(v["keys"])) if isinstance(v["keys"], str) else len(v["keys"])   # noqa: S307 - our fixture
               for name in ("parity", "ppvd", "moge2_geometry") for v in fixture_json(name).values()]
    assert max(counts_) * 10 <= filecheck.MAX_TENSORS
    assert max(counts_) * 2_000 <= filecheck.MAX_HEADER_BYTES     # ~100 bytes a key, 20x spare


