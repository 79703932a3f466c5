"""Faults injected into a Ray job from the tests (production code has no test hooks): imported by the Ray
workers, so tests/support must be on their PYTHONPATH (tests/batch/test_batch_ray.py's ray_session does it)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from comfyui_ppd.batch.distributed import ModelActor

TARGET = "s1/t1/img13"      # an item in the middle of batch_data.make_tree's 32 images


class DyingModelActor(ModelActor):
    """A model worker that dies (os._exit, as a crashed process or node) on the batch holding TARGET; only the
    first worker to get it dies: it creates <the --out folder>.killed first, which the test checks."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if TARGET in (str(stem) for stem in batch["stem"]):
            marker = Path(str(self.processor.options.out) + ".killed")
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return super().__call__(batch)
            os._exit(1)
        return super().__call__(batch)
