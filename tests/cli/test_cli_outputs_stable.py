"""Issue 15, "Must not change": a fixed set of CLI runs (images, a folder, a video, --metric, a point cloud) on tiny
seeded models gives the files recorded from the code before the refactor (tests/support/data/cli_outputs).

The file list must match exactly. Values are compared within float32 rounding, not byte for byte, so that another
CPU's kernels (SIMD width, FMA) pass; on the recording machine the files are byte-identical (compare the sha256
lists written by `python tests/support/cli_outputs.py record DEST`).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tolerances import ENC_TOL, END_TO_END_TOL

from cli_outputs import REFERENCE, run_all, sha256_list
from comfyui_ppd import imaging
from mesh_files import read_ply

av = pytest.importorskip("av", reason="the video run needs PyAV")

# Encoder features (ENC_TOL) feed the DiT, whose own kernels add END_TO_END_TOL; both are float32-derived bounds for
# O(1) values, so a raw output may move by VALUE_TOL times its largest magnitude.
VALUE_TOL = ENC_TOL + END_TO_END_TOL
# The flicker figures are ratios of depth differences and fits of them: their relative error is the depth's
# (VALUE_TOL) amplified by the division by a difference, bounded here by 10x.
RATIO_TOL = 10 * VALUE_TOL
# One colormap index (uint8(v * 255) truncates) moves a colour channel by at most the table's largest step.
LUT_STEP = math.ceil(float(imaging.colormap(torch.arange(256) / 255).diff(dim=0).abs().max() * 255))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> Path:
    return run_all(tmp_path_factory.mktemp("cli_outputs"))


def test_the_runs_write_exactly_the_recorded_files(outputs):
    recorded = json.loads((REFERENCE / "sha256.json").read_text())
    assert sorted(sha256_list(outputs)) == sorted(recorded)


def _close(got: np.ndarray, want: np.ndarray, name: str) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, name
    tol = VALUE_TOL * float(np.abs(want).max())
    assert np.abs(got.astype(np.float64) - want).max() <= tol, name


def _raw(path: Path) -> np.ndarray:
    return np.load(path)["depth"] if path.suffix == ".npz" else np.load(path)


def _raw_of(png: Path) -> Path:
    """The raw depth a PNG was made from: name_depth.npy beside it, or the clip's .npz for a frame of a sequence."""
    if png.parent.name.endswith("_depth16"):
        return png.parent.with_name(png.parent.name.removesuffix("16") + ".npz")
    return png.with_name(re.sub(r"_depth(16|_color)\.png$", "_depth.npy", png.name))


def _level_tol(raw: np.ndarray, levels: int) -> int:
    """PNG levels a depth error of VALUE_TOL * max|depth| can move: the PNG holds depth normalised by its range
    (min and max move too, hence 3x), quantised to `levels`; plus one level for rounding."""
    spread = float(raw.max() - raw.min())
    return 1 + math.ceil(levels * 3 * VALUE_TOL * float(np.abs(raw).max()) / spread)


@pytest.mark.parametrize("name", sorted(json.loads((REFERENCE / "sha256.json").read_text())))
def test_each_file_matches_its_reference(outputs, name):
    got, want = outputs / name, REFERENCE / name
    if name.endswith((".npy", ".npz")):
        if name.endswith(".npz"):
            g, w = np.load(got), np.load(want)
            assert sorted(g.files) == sorted(w.files)
            for key in w.files:
                _close(g[key], w[key], f"{name}[{key}]")
        else:
            _close(np.load(got), np.load(want), name)
    elif name.endswith(".ply"):
        (gxyz, grgb), (wxyz, wrgb) = read_ply(got), read_ply(want)
        assert gxyz.shape == wxyz.shape                          # same points kept
        assert torch.equal(grgb, wrgb)                           # colours are the input's pixels: exact
        _close(gxyz.numpy(), wxyz.numpy(), name)
    elif name.endswith(".png"):
        g, w = Image.open(got), Image.open(want)
        assert (g.mode, g.size) == (w.mode, w.size)
        diff = np.abs(np.asarray(g, dtype=np.int64) - np.asarray(w, dtype=np.int64)).max()
        if name.endswith("_normals.png"):                        # unit normals * 127.5 + 127.5
            assert diff <= 1 + math.ceil(255 * VALUE_TOL)
        else:
            raw = _raw(REFERENCE / _raw_of(Path(name)))
            if name.endswith("_color.png"):
                assert diff <= LUT_STEP * _level_tol(raw, 255)
            else:
                assert diff <= _level_tol(raw, 65535)
    elif name.endswith(".mp4"):                                  # lossy, encoder-dependent: frames and size
        def frames(path: Path) -> list[tuple[int, int]]:
            with av.open(str(path)) as container:
                return [(f.width, f.height) for f in container.decode(video=0)]
        assert frames(got) == frames(want)
    elif name.endswith(".json"):
        _same_numbers(json.loads(got.read_text()), json.loads(want.read_text()), name)
    elif name.endswith(".txt"):
        _same_numbers(got.read_text(), want.read_text(), name)
    else:
        pytest.fail(f"no comparison for {name}")


def _same_numbers(got: object, want: object, name: str, printed: bool = False) -> None:
    """Same structure; numbers within RATIO_TOL (relative), printed ones also within their last printed digit."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), name
        for key in want:
            _same_numbers(got[key], want[key], f"{name}[{key}]", printed)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), name
        for i, (g, w) in enumerate(zip(got, want)):
            _same_numbers(g, w, f"{name}[{i}]", printed)
    elif isinstance(want, (int, float)) and not isinstance(want, bool):
        assert isinstance(got, (int, float)), name
        assert abs(got - want) <= RATIO_TOL * abs(want) + (0.011 if printed else 0.0), name
    elif isinstance(want, str) and isinstance(got, str):          # printed text: numbers to their last digit
        number = r"-?\d+(?:\.\d+)?"
        assert re.sub(number, "#", got) == re.sub(number, "#", want), name
        _same_numbers([float(v) for v in re.findall(number, got)], [float(v) for v in re.findall(number, want)],
                      name, printed=True)
    else:
        assert got == want, name
