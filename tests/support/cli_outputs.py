"""A fixed set of CLI runs on tiny seeded models whose output files must not change (issue 15, "Must not change").

`run_all` writes every run's outputs under one folder; `python tests/support/cli_outputs.py record DEST` does it
and writes DEST/sha256.json (file -> sha256), the byte-identity evidence for a refactor: record with the old code
and the new code on one machine and diff the two lists. tests/cli/test_cli_outputs_stable.py compares a fresh run
with the references stored in tests/support/data/cli_outputs (file list exact, values within float32 rounding).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REFERENCE = Path(__file__).resolve().parent / "data" / "cli_outputs"
CLIP = REFERENCE / "inputs" / "clip.mp4"      # stored, not encoded per run: another libx264 encodes other bytes

# name -> the run's own arguments; every run adds --models-dir, --area, --steps, --seed and --no-progress.
RUNS: dict[str, list[str]] = {
    "images": ["{inputs}/a.png", "{inputs}/b.png"],
    "folder": ["{inputs}/tree"],
    "video": ["{clip}", "--flicker", "--process-size", "32x32", "--steps", "1"],
    "metric": ["{inputs}/a.png", "--pointcloud", "--metric", "--normals", "--outlier-filter", "off"],
    "pointcloud": ["{inputs}/b.png", "--pointcloud", "--near", "2", "--far", "5", "--fov", "50"],
}


def write_inputs(folder: Path) -> None:
    """Seeded noise images: a.png RGB 24x32, b.png grey 20x28, tree/x.png and tree/sub/y.png RGB."""
    rng = np.random.default_rng(0)

    def noise(path: Path, shape: tuple[int, ...]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random(shape) * 255).astype("uint8")).save(path)

    noise(folder / "a.png", (24, 32, 3))
    noise(folder / "b.png", (20, 28))
    noise(folder / "tree" / "x.png", (16, 24, 3))
    noise(folder / "tree" / "sub" / "y.png", (24, 16, 3))


def write_models(folder: Path) -> None:
    """The tests' tiny seeded PPD, DA2, MoGe-2, PPVD and Pi3 checkpoints in one models folder."""
    from tiny_models import write_tiny_models
    from tiny_ppvd import write_tiny_ppvd
    write_tiny_models(folder)
    write_tiny_ppvd(folder)


def run_all(work: Path) -> Path:
    """Every run of RUNS into work/outputs/<name>; returns work/outputs. Raises if a run does not exit 0."""
    from comfyui_ppd.cli import main
    inputs, models, outputs = work / "inputs", work / "models", work / "outputs"
    write_inputs(inputs)
    write_models(models)
    for name, args in RUNS.items():
        argv = [a.format(inputs=inputs, clip=CLIP) for a in args]
        code = main(["predict", "--out", str(outputs / name), "--models-dir", str(models), "--area", "1024",
                     "--steps", "2", "--seed", "0", "--no-progress", *argv])     # a run's own options come last
        if code != 0:
            raise RuntimeError(f"the {name!r} CLI run exited {code}")
    return outputs


def sha256_list(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder`."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


if __name__ == "__main__":       # python tests/support/cli_outputs.py record DEST (run from the repository root)
    if sys.argv[1:2] != ["record"] or len(sys.argv) != 3:
        sys.exit("usage: python tests/support/cli_outputs.py record DEST")
    import shutil
    import tempfile
    dest = Path(sys.argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        out = run_all(Path(tmp))
        shutil.copytree(out, dest, dirs_exist_ok=True)
    hashes = {k: v for k, v in sha256_list(dest).items() if k != "sha256.json"}
    (dest / "sha256.json").write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
