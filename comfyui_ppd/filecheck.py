"""What a model file really is, from its first bytes and size, before anything tries to load it.

A failed download leaves files that loaders report badly: a web page saved under the model's name
(Google Drive's "can't scan for viruses" page), a Git LFS pointer (a clone without LFS), an empty or
truncated file. `check_model_file` names the case and the fix; `loader_reason` turns any loader
exception into one complete sentence without torch's advice to load untrusted code.
"""
from __future__ import annotations

import json
import re
import struct
import zipfile
from pathlib import Path

from .catalogue import OFFICIAL_FILES
from .errors import CheckpointError

HEAD_BYTES = 4096
# Real headers are small (the largest, pi3.safetensors: 1,210 tensors, ~130 KB): bounds far above them refuse a
# hostile header (60 MB, a million tensors) before it is parsed or walked.
MAX_HEADER_BYTES = 8 * 2 ** 20
MAX_TENSORS = 20_000
MODEL_SUFFIXES = (".safetensors", ".sft", ".pth", ".pt", ".ckpt", ".bin")
_HTML_START = re.compile(rb"\s*(<!doctype\s+html|<html|<head|<body|<!--|<meta|<title|<script)", re.IGNORECASE)
_GDRIVE = re.compile(rb"google\s*drive|drive\.google\.com|drive\.usercontent\.google\.com|googleusercontent",
                     re.IGNORECASE)
_GDRIVE_QUOTA = re.compile(rb"quota|too many users have viewed or downloaded", re.IGNORECASE)
_LFS_START = b"version https://git-lfs.github.com/spec/"
_ADVICE = re.compile(r"weights_only|add_safe_globals|safe_globals|arbitrary code|trust|re-running|"
                     r"torch\.serialization|you have two options|do those steps", re.IGNORECASE)


def looks_like_html(head: bytes) -> bool:
    """True when these first bytes start a web page (after optional BOM and whitespace)."""
    return bool(_HTML_START.match(head.removeprefix(b"\xef\xbb\xbf")))


def _size_text(n: int) -> str:
    """'1,234 bytes', with MB or GB added for large sizes."""
    if n < 10 ** 6:
        return f"{n:,} bytes"
    return f"{n:,} bytes, {n / 1e6:.1f} MB" if n < 10 ** 8 else f"{n:,} bytes, {n / 1e9:.2f} GB"


def redownload_hint(path: Path) -> str:
    """What to do: delete the file and get the real one (the catalogue URL when the name is official)."""
    entry = OFFICIAL_FILES.get(path.name)
    if entry is None:
        return (f"Delete {path} and download it again; the official model files and their links are "
                "in the model table of the pack's README.")
    if entry.url is None:
        return (f"Delete {path}. {entry.name} is only on Google Drive: open the link in the official README "
                f"({entry.page}) in a browser, confirm the \"Google Drive can't scan this file for "
                f"viruses\" page with \"Download anyway\", and save the file ({entry.approx_size}) as {path}.")
    return (f"Delete {path} and download it again ({entry.approx_size}) from {entry.url}, saving it as "
            f"{path}, or run `python -m comfyui_ppd download {entry.name}`.")


def _html(head: bytes, size: int, path: Path) -> tuple[str, str]:
    if _GDRIVE.search(head):
        if _GDRIVE_QUOTA.search(head):
            found = (f"a Google Drive web page ({_size_text(size)}) saying the file's download quota is "
                     "used up, saved instead of the model")
            fix = ("Google Drive allows only so many downloads per day: try again later in a browser, "
                   "or add the file to your own Drive and download it from there. " + redownload_hint(path))
        else:
            found = (f"a Google Drive web page ({_size_text(size)}), its \"can't scan this file for viruses\" "
                     "confirmation page, saved instead of the model")
            fix = ("Large Google Drive files need a click in a browser before they download. "
                   + redownload_hint(path))
        return found, fix
    found = (f"a web page (HTML, {_size_text(size)}) saved instead of the model, typically an error or "
             "login page of the download site")
    return found, redownload_hint(path)


def _lfs(text: str, path: Path) -> tuple[str, str]:
    m = re.search(r"^size (\d+)\s*$", text, re.MULTILINE)
    of = f"a file of {int(m[1]):,} bytes" if m else "a file of unknown size"
    return (f"a Git LFS pointer of {of}, not the file itself (a model repository cloned without Git LFS)",
            "Fetch the real file with `git lfs install` and `git lfs pull` in that clone, or: "
            + redownload_hint(path))


def _is_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:           # not just a multi-byte character cut at the end
            return False
        text = head[:e.start].decode("utf-8")
    printable = sum(c.isprintable() or c in "\r\n\t" for c in text)
    return printable >= 0.95 * max(len(text), 1)


def _safetensors(path: Path, size: int, head: bytes) -> tuple[str, str] | None:
    """Problems of a safetensors file: header length beyond the file, header not JSON, data cut short."""
    fix = "The download is incomplete or damaged. " + redownload_hint(path)
    if size < 8:
        return f"a safetensors file of only {size} bytes (shorter than its 8-byte header length)", fix
    (n,) = struct.unpack("<Q", head[:8])
    if 8 + n > size:
        found = (f"a safetensors file with a broken header: it announces a {n:,}-byte header but the file "
                 f"has {size:,} bytes")
        return found, fix
    if n > MAX_HEADER_BYTES:
        found = (f"a safetensors file with a {n:,}-byte header, beyond the {MAX_HEADER_BYTES:,} bytes this pack "
                 "reads (real model files have headers under 1 MB)")
        return found, "The file is damaged or not a model. " + redownload_hint(path)
    with open(path, "rb") as f:
        f.seek(8)
        raw = f.read(n)
    try:
        header = parse_header(raw)
    except (ValueError, RecursionError):
        return "a safetensors file with a broken header (not valid JSON)", fix
    count = len(header) - ("__metadata__" in header)
    if count > MAX_TENSORS:
        found = (f"a safetensors file of {count:,} tensors, beyond the {MAX_TENSORS:,} this pack reads "
                 "(real model files have a few thousand at most)")
        return found, "The file is damaged or not a model. " + redownload_hint(path)
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return "a safetensors file with a broken header (not valid JSON)", fix
    need = 8 + n + max(ends, default=0)
    if size < need:
        return (f"a truncated safetensors file: {size:,} of the {need:,} bytes its header describes", fix)
    return None


def parse_header(raw: bytes) -> dict:
    """A safetensors JSON header as a dict (ValueError or RecursionError when it is not a JSON object)."""
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file that `check_model_file` accepted (every entry, __metadata__ too)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return parse_header(f.read(n))


def inspect_model_file(path: Path) -> tuple[str | None, str, str]:
    """(format, found, fix): format "safetensors" or "torch" when `path` can be a checkpoint, else None."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in MODEL_SUFFIXES)[:5]
        listing = f" Model files in it: {', '.join(inside)}." if inside else " It holds no model files."
        return None, "a folder, not a file", "Give the path of the model file itself." + listing
    size = path.stat().st_size
    if size == 0:
        return None, "an empty file (0 bytes), what an interrupted download leaves", redownload_hint(path)
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    if looks_like_html(head):
        return (None, *_html(head, size, path))
    if head.startswith(_LFS_START):
        return (None, *_lfs(head.decode("utf-8", "replace"), path))
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            found = (f"a truncated PyTorch checkpoint ({_size_text(size)}; the end of the zip archive with its "
                     "table of contents is missing)")
            return None, found, "The download stopped early. " + redownload_hint(path)
        return "torch", "", ""
    if head[:1] == b"\x80":                                  # legacy (non-zip) torch.save: a pickle
        return "torch", "", ""
    named_st = path.suffix.lower() in (".safetensors", ".sft")
    plausible_st = len(head) >= 9 and head[8:9] == b"{" and 8 + struct.unpack("<Q", head[:8])[0] <= size
    if plausible_st or (named_st and not _is_text(head)):
        problem = _safetensors(path, size, head)
        return (None, *problem) if problem else ("safetensors", "", "")
    if _is_text(head):
        first = head.decode("utf-8", "replace").strip().splitlines()[0][:60] if head.strip() else ""
        return (None, f"a text file ({_size_text(size)}, starting {first!r}), not a model",
                redownload_hint(path))
    found = f"neither a PyTorch nor a safetensors file ({_size_text(size)}, starting with bytes {head[:8].hex(' ')})"
    return None, found, redownload_hint(path)


def check_model_file(path: Path, expected: str = "a model checkpoint (.pth, .pt or .safetensors)") -> str:
    """The file's format ("safetensors" or "torch"); CheckpointError naming the case and the fix otherwise."""
    fmt, found, fix = inspect_model_file(path)
    if fmt is None:
        raise CheckpointError(path, expected, found, fix)
    return fmt


def loader_reason(error: BaseException) -> str:
    """A loader exception as whole sentences, without torch's advice to load with weights_only=False."""
    text = str(error) or type(error).__name__
    if "WeightsUnpickler error:" in text:                    # torch's real cause comes after its advice
        text = text.split("WeightsUnpickler error:", 1)[1]
    sentences = re.split(r"(?<=[.!?])\s+|\n+", text.strip())
    kept = [s.strip() for s in sentences if s.strip() and not _ADVICE.search(s)]
    out = ""
    for s in kept:
        if out and len(out) + len(s) > 300:
            break
        out = f"{out} {s}".strip()
    out = out or type(error).__name__
    return out if out.endswith((".", "!", "?")) else out + "."
