"""`predict --tiles` on the tiny models: full-resolution depth, the one-tile case equal to the plain run's depth
resized, and bad tiling settings refused before anything runs."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cli_run import predict
from comfyui_ppd import imaging, tiles_compare


def test_tiles_write_depth_at_the_input_size(models, tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((150, 230, 3)) * 255).astype("uint8")).save(tmp_path / "big.png")
    out = tmp_path / "out"
    assert predict(models, tmp_path / "big.png", "--out", out, "--tiles", "--tile-size", "96x64") == 0
    depth = np.load(out / "big_depth.npy")
    assert depth.shape == (150, 230) and np.isfinite(depth).all()
    assert np.asarray(Image.open(out / "big_depth16.png")).shape == (150, 230)


def test_one_tile_is_the_plain_depth_resized(models, tmp_path):
    Image.fromarray((np.random.default_rng(1).random((60, 90, 3)) * 255).astype("uint8")).save(tmp_path / "s.png")
    assert predict(models, tmp_path / "s.png", "--out", tmp_path / "t", "--tiles", "--tile-size", "96x64") == 0
    assert predict(models, tmp_path / "s.png", "--out", tmp_path / "p") == 0
    plain = torch.from_numpy(np.load(tmp_path / "p" / "s_depth.npy"))
    want = imaging.resize_depth(plain[None, None], (60, 90))[0, 0].numpy()
    assert np.array_equal(np.load(tmp_path / "t" / "s_depth.npy"), want)


def test_bad_tiling_settings_stop_the_run(models, image_file, tmp_path, capsys):
    assert predict(models, image_file, "--out", tmp_path / "o", "--tiles", "--overlap", "0.9") == 2
    assert "overlap" in capsys.readouterr().err
    assert predict(models, image_file, "--out", tmp_path / "o", "--tiles", "--tile-size", "8x8") == 2
    assert "too small" in capsys.readouterr().err


def test_compare_prints_flying_pixels_and_writes_the_side_by_side(models, tmp_path, capsys):
    Image.fromarray((np.random.default_rng(2).random((120, 200, 3)) * 255).astype("uint8")).save(tmp_path / "c.png")
    assert predict(models, tmp_path / "c.png", "--out", tmp_path / "w") == 0
    assert predict(models, tmp_path / "c.png", "--out", tmp_path / "t", "--tiles", "--tile-size", "96x64") == 0
    capsys.readouterr()
    args = [str(tmp_path / "w" / "c_depth.npy"), str(tmp_path / "t" / "c_depth.npy"), str(tmp_path / "side.png")]
    assert tiles_compare.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].strip().startswith("whole image: flying pixels") and lines[1].strip().startswith("tiled:")
    assert Image.open(tmp_path / "side.png").size == (2 * 200, 2 * 120)
    assert tiles_compare.main(args) == 2                                  # an existing file is never replaced
    assert "already exists" in capsys.readouterr().err
