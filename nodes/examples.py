"""Start-up chores: copy the pack's example inputs into ComfyUI's input folder so the shipped workflows run
on a fresh install. Only absent files are copied (a user's file is never replaced); failures are logged."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import folder_paths

log = logging.getLogger("comfyui_ppd")
EXAMPLES = Path(__file__).resolve().parents[1] / "example_inputs"


def copy_examples(source: str | os.PathLike = EXAMPLES, target: str | None = None) -> list[str]:
    """Copy each file of `source` that `target` (default: the input folder) lacks; returns the names copied."""
    copied = []
    try:
        target = target or folder_paths.get_input_directory()
        os.makedirs(target, exist_ok=True)
        for file in sorted(Path(source).iterdir()):
            dest = os.path.join(target, file.name)
            if not file.is_file() or os.path.lexists(dest):
                continue
            try:
                with open(file, "rb") as src, open(dest, "xb") as out:   # "x": never replaces a file
                    shutil.copyfileobj(src, out)
            except FileExistsError:
                continue
            except OSError:
                if os.path.isfile(dest):
                    os.remove(dest)                                         # no half-copied example
                raise
            copied.append(file.name)
    except Exception as e:  # start-up must never fail because of an example file
        log.warning("PPD: could not copy the example inputs from %s into ComfyUI's input folder (%s); the "
                    "shipped workflows then need their images loaded by hand.", source, e)
    if copied:
        log.info("PPD: copied example inputs into %s: %s", target, ", ".join(copied))
    return copied
