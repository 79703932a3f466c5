"""Atomic file writes: readers never see a partial file, and nothing is overwritten unless asked."""
from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import BinaryIO

from ..errors import InputError


def atomic_write(path: str | os.PathLike, write_fn: Callable[[BinaryIO], object],
                 overwrite: bool = False) -> Path:
    """Write via `write_fn(binary_file)` to a temp file beside `path`, then rename it into place.

    Readers never see a partial file; an existing file is kept unless overwrite=True."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name to write to")
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; pass overwrite=True or choose another file name")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")              # the form _TEMP matches
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists() and not overwrite:  # created meanwhile by someone else
            raise InputError(f"{path} already exists; pass overwrite=True or choose another file name")
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)                       # on a read-only disk this fails too: the write's error is the one to show
        raise InputError(f"could not write {path}: {e.strerror or e}. Check that the folder is "
                         "writable and the disk has free space.") from e
    except BaseException:
        _discard(tmp)
        raise
    return path


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


_TEMP = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{8}\.tmp")
STALE_AFTER_S = 60.0      # a temp file untouched this long is a killed run's (a live write renames within seconds)


def remove_stale_temps(folder: Path, is_ours: Callable[[str], bool] | Collection[str]) -> int:
    """Delete temp files `atomic_write` left in `folder` (a killed run) for the output names `is_ours` accepts,
    untouched for STALE_AFTER_S; any other file, a user's included, is kept. Returns how many were removed."""
    accept = is_ours if callable(is_ours) else is_ours.__contains__
    removed, cutoff = 0, time.time() - STALE_AFTER_S
    try:
        entries = list(os.scandir(folder))
    except OSError:                                     # no such folder yet: nothing to clean
        return 0
    for entry in entries:
        m = _TEMP.fullmatch(entry.name)
        if m and accept(m["target"]):
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
    return removed


def check_writable(folder: Path) -> None:
    """InputError naming `folder` when no file can be created in it (read-only disk, no permission)."""
    probe = folder / f".ppd-write-check.{uuid.uuid4().hex[:8]}.tmp"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as e:
        raise InputError(f"cannot write to the output folder {folder} ({e.strerror or e}); choose another --out, "
                         "or make the folder writable.") from None
    _discard(probe)
