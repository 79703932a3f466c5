"""A resumable downloader for the official model files (standard library only: urllib).

What the files are and where they go is in `catalogue`.
"""
from __future__ import annotations

import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from .catalogue import OFFICIAL_FILES, ModelFile
from .errors import PPDError
from .filecheck import looks_like_html
from .progress import ConsoleProgress

_USER_AGENT = "comfyui-ppd (urllib)"


# ------------------------------------------------------------------------------- download


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
        bar = ConsoleProgress(label, progress, bytes=True, start=done, every=0.2)
        with open(part, mode) as out:
            try:
                block = first
                while block:
                    out.write(block)
                    done += len(block)
                    bar(done, total)
                    block = _read(resp, chunk, done)
            finally:
                bar(done, total, final=True)
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


def _offline(reason: object, todo: Sequence[tuple[ModelFile | str, Path]]) -> PPDError:
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
        assert isinstance(entry_or_url, ModelFile)
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
        dest, url = target_dir / entry.name, str(entry.url)
        try:
            _fetch(url, dest, progress, 30, 1 << 20)
        except urllib.error.HTTPError as err:
            raise _http_error(err, url, dest) from err
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
