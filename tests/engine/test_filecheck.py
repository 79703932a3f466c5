"""What a failed download leaves, through the public API and the Load node: one clear message each.

Every case names what the file really is and what to do, and never passes on torch's advice to
load with weights_only=False.
"""
from __future__ import annotations

import importlib
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from comfyui_ppd import load_dit, load_semantic_encoder
from comfyui_ppd.catalogue import OFFICIAL_FILES
from comfyui_ppd.errors import CheckpointError
from pack_nodes import node_classes
from tiny_models import tiny_dit_state_dict

GDRIVE_PAGE = (b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
               b"<p>Google Drive can't scan this file for viruses.</p><p>ppd_moge.pth (1.9G) is too large "
               b"for Google to scan for viruses. Would you still like to download this file?</p>"
               b"<form action=\"https://drive.usercontent.google.com/download\"><input type=\"submit\" "
               b"value=\"Download anyway\"></form></body></html>")
QUOTA_PAGE = (b"<html><head><title>Google Drive - Quota exceeded</title></head><body>Sorry, you can't view or "
              b"download this file at this time. Too many users have viewed or downloaded this file recently."
              b"</body></html>")
LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a2cbbd3f0b5c1e5a8a0b1d6b1c0e7f9a6b1d2c3e4f5a6b7c8d9e0f1a2b3c4\n"
               b"size 1999561234\n")
HF_DIT = OFFICIAL_FILES["ppd.pth"].url
HF_DA2 = OFFICIAL_FILES["depth_anything_v2_vitl.pth"].url


def _torch_file(path: Path) -> bytes:
    torch.save(tiny_dit_state_dict(), path)
    return path.read_bytes()


def _safetensors_file(path: Path) -> bytes:
    save_file(tiny_dit_state_dict(), str(path))
    return path.read_bytes()


def _header(data: bytes, header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + data


# name -> (file name, role, how to write it, phrases the message must hold)
CASES = {
    "google drive virus-scan page": (
        "ppd_moge.pth", "dit", lambda p: p.write_bytes(GDRIVE_PAGE),
        ["a Google Drive web page", "can't scan this file for viruses", "open the link in the official README",
         "Download anyway", "save the file", "ppd_moge.pth"]),
    "google drive quota page": (
        "ppd_moge.pth", "dit", lambda p: p.write_bytes(QUOTA_PAGE),
        ["a Google Drive web page", "quota", "try again later"]),
    "other web page": (
        "ppd.pth", "dit", lambda p: p.write_bytes(b"\n<!doctype html>\n<html><body>Not Found</body></html>"),
        ["a web page (HTML", "Delete", HF_DIT]),
    "git lfs pointer": (
        "ppd.pth", "dit", lambda p: p.write_bytes(LFS_POINTER),
        ["a Git LFS pointer of a file of 1,999,561,234 bytes", "git lfs pull", HF_DIT]),
    "text file": (
        "depth_anything_v2_vitl.pth", "encoder", lambda p: p.write_text("model: depth_anything_v2_vitl\n"),
        ["a text file", "'model: depth_anything_v2_vitl'", HF_DA2]),
    "empty file": (
        "depth_anything_v2_vitl.pth", "encoder", lambda p: p.write_bytes(b""),
        ["an empty file (0 bytes)", "download it again", HF_DA2]),
    "truncated zip": (
        "ppd.pth", "dit", lambda p: p.write_bytes(_torch_file(p)[:100_000]),
        ["a truncated PyTorch checkpoint (100,000 bytes", "table of contents is missing", HF_DIT]),
    "safetensors header longer than the file": (
        "ppd.safetensors", "dit", lambda p: p.write_bytes(struct.pack("<Q", 10 ** 9) + b'{"a": 1}'),
        ["a safetensors file with a broken header", "1,000,000,000-byte header", "16 bytes", "download it again"]),
    "safetensors header not json": (
        "ppd.safetensors", "dit", lambda p: p.write_bytes(_header(bytes(64), b'{"dit.x": {"dtype": F32')),
        ["a safetensors file with a broken header (not valid JSON)", "download it again"]),
    "truncated safetensors": (
        "ppd.safetensors", "dit", lambda p: p.write_bytes(_safetensors_file(p)[:200_000]),
        ["a truncated safetensors file: 200,000 of the", "bytes its header describes", "download it again"]),
}
LOADERS = {"dit": load_dit, "encoder": load_semantic_encoder}


def _message(load, path) -> str:
    with pytest.raises(CheckpointError) as info:
        load(path)
    return str(info.value)


def _check(msg: str, path: Path, phrases: list[str]) -> None:
    assert msg.startswith(f"{path}: expected "), msg
    for phrase in phrases:
        assert phrase in msg, (phrase, msg)
    text = msg.replace(str(path), "<file>")
    for banned in ("weights_only", "Weights only", "pickle", "IndexError", "()"):
        assert banned not in text, (banned, msg)
    assert msg.endswith("."), msg


@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_through_the_api(tmp_path, case):
    name, role, write, phrases = CASES[case]
    path = tmp_path / name
    write(path)
    _check(_message(LOADERS[role], path), path, phrases)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_through_the_load_node(pack, comfy_env, case):
    """ComfyUI's error dialog shows str(error): the same sentence as the API gives."""
    name, role, write, phrases = CASES[case]
    path = Path(comfy_env.folder_paths.get_folder_paths("ppd")[0]) / name
    write(path)
    args = (name, "depth_anything_v2_vitl.pth") if role == "dit" else ("ppd.pth", name)
    pack_error = importlib.import_module(pack.__name__ + ".comfyui_ppd.errors").CheckpointError  # the pack's own engine
    with pytest.raises(pack_error) as info:
        node_classes(pack)["PPD_LoadModel"]().load(*args, "auto")
    _check(str(info.value), path, phrases)
    assert str(info.value) == _message(LOADERS[role], path)


def test_folder_instead_of_a_file(tmp_path):
    (tmp_path / "ppd.pth").mkdir()
    (tmp_path / "ppd.pth" / "model.safetensors").write_bytes(b"")
    msg = _message(load_dit, tmp_path / "ppd.pth")
    _check(msg, tmp_path / "ppd.pth", ["a folder, not a file", "model.safetensors"])


def test_pickle_with_bad_opcode_is_damaged_not_code(tmp_path):
    path = tmp_path / "ppd.pth"
    path.write_bytes(b"\x80\x02" + b"garbage")
    _check(_message(load_dit, path), path, ["a damaged file", HF_DIT])


def test_any_loader_exception_becomes_a_clear_error(tmp_path, monkeypatch):
    """Even an exception type nobody foresaw, with torch's unsafe advice in it, is a complete sentence."""
    path = tmp_path / "ppd.pth"
    torch.save(tiny_dit_state_dict(), path)

    def broken(*args, **kwargs):
        raise IndexError("pop from empty list. Re-running `torch.load` with `weights_only` set to `False` "
                         "will likely succeed, but it can result in arbitrary code execution.")

    monkeypatch.setattr(torch, "load", broken)
    msg = _message(load_dit, path)
    assert "an unreadable file (pop from empty list.)" in msg and "weights_only" not in msg
    assert "arbitrary code" not in msg and msg.endswith(".")


def test_a_long_reason_is_cut_between_sentences():
    from comfyui_ppd.filecheck import loader_reason
    reason = loader_reason(RuntimeError("First sentence is fine. " + "Second one is long " * 30 + "and ends."))
    assert reason == "First sentence is fine."


def test_good_files_still_load(tmp_path):
    """The checks must not refuse real checkpoints: zip .pth, legacy .pth, safetensors, safetensors named .pth."""
    sd = tiny_dit_state_dict()
    torch.save(sd, tmp_path / "zip.pth")
    torch.save(sd, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    save_file(sd, str(tmp_path / "st.safetensors"))
    save_file(sd, str(tmp_path / "st_named.pth"))
    for name in ("zip.pth", "legacy.pth", "st.safetensors", "st_named.pth"):
        assert load_dit(tmp_path / name).config.hidden_size > 0
