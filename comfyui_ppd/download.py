"""Official model files: where they come from, where we look for them, and a resumable downloader.

Standard library only (urllib), so fetching weights needs nothing beyond what the engine already has.
"""
from __future__ import annotations

import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError, PPDError
from .filecheck import looks_like_html

ENV_VAR = "PPD_MODELS_DIR"
ROLES = ("dit", "encoder")
OFFICIAL_REPO = "https://github.com/gangweix/pixel-perfect-depth"
_HINT = "or run again with --download to fetch it automatically"
_USER_AGENT = "comfyui-ppd (urllib)"


@dataclass(frozen=True)
class ModelFile:
    """One official weight file: its name on disk, what it is for, and where to get it."""

    name: str  # file name on disk
    role: str  # "dit" | "encoder"
    semantics: str  # "da2" | "moge2": which semantic encoder the DiT was trained with / this encoder is
    url: str | None  # None: no direct link, see note
    approx_size: str  # approximate, for the user's information only; never checked
    note: str


OFFICIAL_FILES: dict[str, ModelFile] = {f.name: f for f in (
    ModelFile("ppd.pth", "dit", "da2",
              "https://huggingface.co/gangweix/Pixel-Perfect-Depth/resolve/main/ppd.pth",
              "~2.0 GB",
              "Pixel-Perfect Depth DiT trained with Depth Anything v2 semantics "
              "(499,842,112 parameters, fp32). Pair it with depth_anything_v2_vitl.pth."),
    ModelFile("depth_anything_v2_vitl.pth", "encoder", "da2",
              "https://huggingface.co/depth-anything/Depth-Anything-V2-Large/resolve/main/"
              "depth_anything_v2_vitl.pth",
              "~1.3 GB",
              "Depth Anything v2 ViT-L: the semantic encoder for ppd.pth."),
    ModelFile("moge2_vitl_normal.pt", "encoder", "moge2",
              "https://huggingface.co/Ruicheng/moge-2-vitl-normal/resolve/main/model.pt",
              "~1.3 GB",
              "MoGe-2 ViT-L (normal) published as model.pt; saved under this name so it is "
              "recognisable. The semantic encoder for ppd_moge.pth."),
    ModelFile("ppd_moge.pth", "dit", "moge2", None,
              "~2.0 GB",
              "Pixel-Perfect Depth DiT trained with MoGe-2 semantics. It is only on Google Drive "
              f"(no direct link): download it from the link in the official README ({OFFICIAL_REPO}) "
              "and place it in the models folder as ppd_moge.pth. Pair it with moge2_vitl_normal.pt."),
)}

DEFAULT_NAMES = {"dit": "ppd.pth", "encoder": "depth_anything_v2_vitl.pth"}


# ----------------------------------------------------------------------------------- lookup


def _comfy_models_dir(start: Path) -> Path | None:
    """<ComfyUI>/models/ppd when `start` lies under <ComfyUI>/custom_nodes/, else None."""
    for parent in start.parents:
        root = parent.parent
        if parent.name == "custom_nodes" and (
                (root / "folder_paths.py").is_file()
                or ((root / "main.py").is_file() and (root / "comfy").is_dir())):
            return root / "models" / "ppd"
    return None


def _user_cache_dir() -> Path:
    """Last-resort folder outside ComfyUI: $XDG_CACHE_HOME/comfyui-ppd or ~/.cache/comfyui-ppd."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "comfyui-ppd"


def models_dirs(explicit: str | Path | None = None, *, start: Path | None = None) -> list[Path]:
    """Folders to search, best first: `explicit`, $PPD_MODELS_DIR, <ComfyUI>/models/ppd, user cache.

    `start` replaces this file's location when detecting a surrounding ComfyUI (for tests). The
    first folder is also where downloads go. Folders need not exist yet.
    """
    found: list[Path] = []
    if explicit:
        found.append(Path(explicit).expanduser())
    if os.environ.get(ENV_VAR):
        found.append(Path(os.environ[ENV_VAR]).expanduser())
    # The unresolved path keeps a symlinked pack inside ComfyUI; the resolved one covers the rest.
    here = [Path(start).absolute()] if start else [Path(__file__).absolute(), Path(__file__).resolve()]
    comfy = next((d for d in map(_comfy_models_dir, here) if d is not None), None)
    if comfy is not None:
        found.append(comfy)
    found.append(_user_cache_dir())
    unique: list[Path] = []
    for folder in found:
        if folder not in unique:
            unique.append(folder)
    return unique


def _where(entry: ModelFile, target: Path) -> str:
    """How to obtain one official file, as a sentence."""
    if entry.url is None:
        return entry.note
    return (f"Download it ({entry.approx_size}, approximate) from {entry.url} "
            f"and save it as {target / entry.name}, {_HINT}.")


def _missing(name: str, role: str, dirs: list[Path]) -> CheckpointError:
    """The error for a bare file name found in none of `dirs`."""
    searched = ", ".join(str(d) for d in dirs)
    entry = OFFICIAL_FILES.get(name)
    if entry is not None:
        fix = _where(entry, dirs[0])
        if entry.url is None:
            fix += f" Target folder: {dirs[0]}."
    else:
        options = "; ".join(f"{f.name} ({f.url or 'Google Drive, see ' + OFFICIAL_REPO})"
                            for f in OFFICIAL_FILES.values() if f.role == role)
        fix = (f"Check the file name, or use an official {role} file: {options}. "
               f"Place it in {dirs[0]}, {_HINT} (official files only).")
    found = f"no such file in {searched} (searched in this order)"
    return CheckpointError(name, f"a {role} checkpoint", found, fix)


def find_model(name_or_path: str | Path | None, role: str, *, explicit: str | Path | None = None,
               start: Path | None = None) -> Path:
    """Locate a checkpoint: an existing path as is, a bare name in models_dirs(), or the role's default.

    With nothing given, the role's default file wins, else the one official file of that role that is
    present. Missing files raise CheckpointError saying where we looked and where to download from.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    dirs = models_dirs(explicit, start=start)
    if name_or_path:
        given = Path(name_or_path).expanduser()
        if given.is_file():
            return given
        if str(name_or_path) != given.name:  # a path, not a bare name: do not guess elsewhere
            raise CheckpointError(given, f"a {role} checkpoint file", "no file at this path",
                                  "Check the path, or give a bare file name to search "
                                  f"{', '.join(str(d) for d in dirs)}.")
        hit = next((d / given.name for d in dirs if (d / given.name).is_file()), None)
        if hit is None:
            raise _missing(given.name, role, dirs)
        return hit
    default = DEFAULT_NAMES[role]
    for name in [default] + [f.name for f in OFFICIAL_FILES.values() if f.role == role and f.name != default]:
        hit = next((d / name for d in dirs if (d / name).is_file()), None)
        if hit is not None:
            return hit
    raise _missing(default, role, dirs)


# ------------------------------------------------------------------------------- download


class _Progress:
    """A one-line console progress bar on stderr: bytes, percent and speed, redrawn with \\r."""

    def __init__(self, label: str, done: int, total: int | None, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.first, self.t0, self.last = done, time.monotonic(), 0.0

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < 0.2):
            return
        self.last = now
        speed = (done - self.first) / 1e6 / max(now - self.t0, 1e-6)
        if self.total:
            size = f"{done / 1e6:,.1f}/{self.total / 1e6:,.1f} MB {100 * done / self.total:5.1f}%"
        else:
            size = f"{done / 1e6:,.1f} MB"
        sys.stderr.write(f"\r{self.label}: {size} {speed:6.1f} MB/s")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


class _Interrupted(Exception):
    """The stream ended before Content-Length was reached; the .part file holds what arrived."""


class _WebPage(Exception):
    """The server sent a web page (HTML) instead of the file: a login, error or confirmation page."""


_NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError)
_MAX_STALLS = 3  # consecutive attempts that added nothing before giving up
_MAX_ATTEMPTS = 50  # hard bound, even while every attempt adds bytes


def _open(url: str, offset: int, timeout: float):
    """GET `url`, from byte `offset` on when > 0. urllib keeps the Range header across redirects."""
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    # A fresh opener per call so proxy settings are read from the environment now.
    return urllib.request.build_opener().open(urllib.request.Request(url, headers=headers), timeout=timeout)


def _range_start_total(content_range: str | None) -> tuple[int | None, int | None]:
    """'bytes 10-99/100' -> (10, 100); 'bytes */100' -> (None, 100); unknown parts -> None."""
    m = re.match(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", content_range or "")
    if not m:
        return None, None
    return (int(m[1]) if m[1] else None), (int(m[2]) if m[2] != "*" else None)


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _read(resp, chunk: int, done: int) -> bytes:
    """One block of the body; a reset or stalled connection becomes _Interrupted (resumable)."""
    try:
        return resp.read(chunk)
    except (OSError, http.client.HTTPException) as err:
        raise _Interrupted(f"the transfer broke after {done:,} bytes ({err})") from err


def _fetch_once(url: str, part: Path, label: str, progress: bool, timeout: float, chunk: int) -> bool:
    """One request into `part`, resuming when it has bytes. True when the file is complete."""
    offset = _size(part)
    try:
        resp = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        err.close()  # its headers stay readable; the connection is released
        if err.code != 416 or not offset:
            raise
        _, total = _range_start_total(err.headers.get("Content-Range"))
        if total is None or total == offset:  # nothing left to send: the .part is the whole file
            return True
        part.unlink()  # .part is longer than the file: it is not this file, start over
        return False
    with resp:
        if resp.status == 206:
            start, total = _range_start_total(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink()  # the server answered another range than asked: start over
                return False
            mode = "ab"
        else:  # 200: the server ignored the range and sends the whole file
            length = resp.headers.get("Content-Length")
            offset, total, mode = 0, (int(length) if length else None), "wb"
        done = offset
        first = _read(resp, chunk, done)
        if resp.headers.get_content_type() == "text/html" or (mode == "wb" and looks_like_html(first[:4096])):
            raise _WebPage(resp.headers.get("Content-Type") or "HTML")
        bar = _Progress(label, done, total, progress)
        with open(part, mode) as out:
            try:
                block = first
                while block:
                    out.write(block)
                    done += len(block)
                    bar.update(done)
                    block = _read(resp, chunk, done)
            finally:
                bar.update(done, final=True)
    if total is not None and done != total:
        raise _Interrupted(f"the connection closed after {done:,} of {total:,} bytes")
    return True


def _fetch(url: str, dest: Path, progress: bool, timeout: float, chunk: int) -> Path:
    """Download into dest.part (resuming), retry while retries make progress, then rename to dest."""
    part = dest.with_suffix(dest.suffix + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    stalls, reason = 0, "no data arrived"
    for _ in range(_MAX_ATTEMPTS):
        before = _size(part)
        try:
            if _fetch_once(url, part, dest.name, progress, timeout, chunk):
                os.replace(part, dest)  # atomic: dest only ever appears complete
                return dest
            reason = "the server's answer did not match the partial file"
        except _Interrupted as err:
            reason = str(err)
        except _WebPage as err:
            part.unlink(missing_ok=True)          # nothing of a web page is kept, not even a partial file
            raise _web_page_error(url, dest, str(err)) from None
        stalls = 0 if _size(part) > before else stalls + 1
        if stalls >= _MAX_STALLS:
            break
        if progress:
            sys.stderr.write(f"{dest.name}: {reason}; retrying\n")
    raise PPDError(f"Downloading {url} to {dest} failed: {reason}. "
                   f"The partial file {part} is kept; run again to resume.")


def _web_page_error(url: str, dest: Path, content_type: str) -> PPDError:
    """The refusal of an HTML answer: what came, that nothing was saved, how to get the real file."""
    gdrive = "drive.google.com" in url or "drive.usercontent.google.com" in url
    how = ("Google Drive shows a \"can't scan this file for viruses\" page for large files: open the link in "
           "a browser, confirm with \"Download anyway\"" if gdrive else
           "The file may have moved or need a login: open the URL in a browser, download the file")
    return PPDError(f"Downloading {url} failed: the server sent a web page ({content_type}) instead of the "
                    f"model file, so nothing was saved to {dest}. {how} and save it as {dest}.")


def _http_error(err: urllib.error.HTTPError, url: str, dest: Path) -> PPDError:
    return PPDError(f"Downloading {url} failed: the server answered HTTP {err.code} {err.reason}. "
                    "Open the URL in a browser (the file may have moved or need a login) "
                    f"and save it as {dest}.")


def _offline(reason: object, todo: list[tuple[ModelFile | str, Path]]) -> PPDError:
    """The no-network error: every file still needed, with its URL (or note) and target path."""
    lines = [f"Cannot download model files ({reason}). Fetch them by hand and save them as shown:"]
    for item, dest in todo:
        if isinstance(item, str):
            lines.append(f"  {item}\n    -> {dest}")
        elif item.url is None:
            lines.append(f"  {item.name}: {item.note}\n    -> {dest}")
        else:
            lines.append(f"  {item.url} ({item.approx_size}, approximate)\n    -> {dest}")
    return PPDError("\n".join(lines))


def download(entry_or_url: ModelFile | str, dest: Path, *, progress: bool = True, timeout: float = 30,
             chunk: int = 1 << 20) -> Path:
    """Fetch one file to `dest` through `dest`.part, resuming a partial download; an existing dest is kept.

    Raises PPDError naming the URL and target when the network is unreachable or the server refuses.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    url = entry_or_url if isinstance(entry_or_url, str) else entry_or_url.url
    if url is None:
        raise PPDError(f"{entry_or_url.name} cannot be downloaded automatically. {entry_or_url.note} "
                       f"Target: {dest}.")
    try:
        return _fetch(url, dest, progress, timeout, chunk)
    except urllib.error.HTTPError as err:
        raise _http_error(err, url, dest) from err
    except _NETWORK_ERRORS as err:
        raise _offline(getattr(err, "reason", err), [(entry_or_url, dest)]) from err


def download_official(names: list[str] | None, target_dir: Path, *, progress: bool = True) -> list[Path]:
    """Fetch official files into `target_dir`; None means every file that has a direct URL.

    Files without a URL (ppd_moge.pth) cannot be fetched: when asked for by name and absent they raise
    PPDError with the instructions; with names=None their instructions are printed to stderr.
    """
    target_dir = Path(target_dir)
    unknown = [n for n in names or [] if n not in OFFICIAL_FILES]
    if unknown:
        raise PPDError(f"Unknown model file(s) {', '.join(unknown)}: "
                       f"choose from {', '.join(OFFICIAL_FILES)}.")
    entries = [OFFICIAL_FILES[n] for n in names] if names is not None else list(OFFICIAL_FILES.values())
    missing = [e for e in entries if not (target_dir / e.name).is_file()]
    manual = [e for e in missing if e.url is None]
    todo = [e for e in missing if e.url is not None]
    for i, entry in enumerate(todo):
        dest = target_dir / entry.name
        try:
            _fetch(entry.url, dest, progress, 30, 1 << 20)
        except urllib.error.HTTPError as err:
            raise _http_error(err, entry.url, dest) from err
        except _NETWORK_ERRORS as err:
            pending = [(e, target_dir / e.name) for e in todo[i:] + manual]
            raise _offline(getattr(err, "reason", err), pending) from err
    how = [f"{e.name} cannot be downloaded automatically. {e.note} Target: {target_dir / e.name}."
           for e in manual]
    if how and names is not None:
        raise PPDError("\n".join(how))
    for line in how:
        sys.stderr.write(f"Not downloaded: {line}\n")
    return [target_dir / e.name for e in entries if (target_dir / e.name).is_file()]
