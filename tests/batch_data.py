"""Input trees for the batch tests: nested folders of small random images of several sizes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

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
