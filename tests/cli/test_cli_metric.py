"""`predict --pointcloud --metric` and `--normals` on tiny checkpoints (a complete tiny MoGe-2 in the models folder)."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cli_run import predict
from comfyui_ppd import load_geometry_model
from comfyui_ppd.io import images
from mesh_files import ply_vertex_count, read_ply
from tiny_models import tiny_moge2_full_checkpoint


def test_metric_pointcloud_is_the_official_chain(models, image_file, tmp_path):
    out = tmp_path / "out"
    assert predict(models, image_file, "--out", out, "--pointcloud", "--metric", "--normals",
                   "--outlier-filter", "off") == 0
    geo = load_geometry_model(models["moge"]).infer(images.load_image(image_file))
    mask, k = geo["mask"][0], geo["intrinsics"][0]
    h, w = mask.shape                                                       # the input image's own size
    assert ply_vertex_count(out / "photo_points.ply") == int(mask.sum())    # one point per valid MoGe-2 pixel
    xyz, _ = read_ply(out / "photo_points.ply")
    xyz = xyz.double() * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)   # the PLY's y, z flip undone
    z = xyz[:, 2]
    assert float(z.min()) >= 1e-3 - 1e-9 and float(z.max()) <= float(geo["depth"][0][mask].max()) * (1 + 1e-6)
    # depth2pcd at integer indices with cx = W/2: x/z·fx + cx is the column j, y/z·fy + cy the row i.
    cols = xyz[:, 0] / z * float(k[0, 0]) * w + w / 2
    rows = xyz[:, 1] / z * float(k[1, 1]) * h + h / 2
    want = mask.nonzero().double()                                          # row-major, as written
    # float32 PLY coordinates (6e-8 relative) times columns up to ~100: within 1e-4 of the index.
    assert torch.allclose(cols, want[:, 1], atol=1e-4) and torch.allclose(rows, want[:, 0], atol=1e-4)
    normals = np.asarray(Image.open(out / "photo_normals.png"))
    assert normals.shape == (h, w, 3) and normals.dtype == np.uint8


def test_metric_outlier_filter_keeps_a_subset(models, image_file, tmp_path):
    assert predict(models, image_file, "--out", tmp_path / "a", "--pointcloud", "--metric") == 0
    assert predict(models, image_file, "--out", tmp_path / "b", "--pointcloud", "--metric",
                   "--outlier-filter", "off") == 0
    assert 0 < ply_vertex_count(tmp_path / "a" / "photo_points.ply") <= ply_vertex_count(
        tmp_path / "b" / "photo_points.ply")


def test_metric_needs_pointcloud_and_a_moge2_file(models, image_file, tmp_path, capsys):
    assert predict(models, image_file, "--out", tmp_path / "o", "--metric") == 2
    assert "add --pointcloud" in capsys.readouterr().err
    assert predict(models, image_file, "--out", tmp_path / "o", "--pointcloud", "--metric",
                   "--geometry-model", models["dit"]) == 2
    assert "PPD DiT" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_normals_without_a_normal_head_is_refused(models, image_file, tmp_path, capsys):
    plain = tmp_path / "moge2_plain.pt"
    torch.save(tiny_moge2_full_checkpoint(normal_head=False), plain)
    assert predict(models, image_file, "--out", tmp_path / "o", "--normals", "--geometry-model", plain) == 2
    assert "no normal head" in capsys.readouterr().err
    assert not any((tmp_path / "o").iterdir())
