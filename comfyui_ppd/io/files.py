"""Atomic file writes: readers never see a partial file, and nothing is overwritten unless asked."""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable
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
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
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
        tmp.unlink(missing_ok=True)
        raise InputError(f"could not write {path}: {e.strerror or e}. Check that the folder is "
                         "writable and the disk has free space.") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
