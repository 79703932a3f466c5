"""Input trees for the batch tests (nested folders of small random images of several sizes) and the tiny
`predict` run they share."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from comfyui_ppd.cli import main

AREA, STEPS = 6144, 2                                         # tiny runs: a few tokens, 2 steps
SIZES = [(50, 70), (70, 50), (64, 64), (40, 90), (52, 72)]     # (50,70) and (52,72) share a processing size


def make_tree(root: Path, n: int = 32, seed: int = 0) -> list[Path]:
    """`n` PNG/JPEG images under root/s0..s2/[t0|t1]/imgNN.ext; returns their paths in sorted order."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        folder = root / f"s{i % 3}" / (f"t{i % 2}" if i % 4 else "")
        folder.mkdir(parents=True, exist_ok=True)
        h, w = SIZES[i % len(SIZES)]
        path = folder / f"img{i:02d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8")).save(path)
        paths.append(path)
    return sorted(paths, key=lambda p: p.relative_to(root).as_posix())


def output_files(out: Path) -> dict[str, bytes]:
    """Every file under `out` (relative posix path -> bytes)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def bad_files(root: Path) -> list[Path]:
    """A corrupt JPEG (a valid header cut short) and a 0-byte PNG."""
    root.mkdir(parents=True, exist_ok=True)
    good = root / "tmp_good.jpg"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(good)
    corrupt, empty = root / "corrupt.jpg", root / "empty.png"
    corrupt.write_bytes(good.read_bytes()[:60])
    empty.write_bytes(b"")
    good.unlink()
    return [corrupt, empty]


def predict(models, *args) -> int:
    """`predict ARGS` with the test models' folder, a tiny area and 2 steps, no progress bar."""
    return main(["predict", *map(str, args), "--models-dir", str(models["dit"].parent),
                 "--area", str(AREA), "--steps", str(STEPS), "--no-progress"])


def counts(text: str) -> dict[str, int]:
    """The numbers in the summary line."""
    m = re.search(r"(\d+) item\(s\): (\d+) done, (\d+) skipped .*?, (\d+) failed; (\d+) image", text)
    return dict(zip(["total", "done", "skipped", "failed", "samples"], map(int, m.groups())))
