"""`predict --pointcloud` end to end on tiny random checkpoints: the PLY matches the saved raw depth."""
from __future__ import annotations

import math

import numpy as np
import torch

import scenes
from comfyui_ppd import imaging
from comfyui_ppd.io import images
from test_cli import predict
from test_geometry import read_ply


def ply_vertex_count(path) -> int:
    head = path.read_bytes().split(b"end_header\n", 1)[0].decode("ascii")
    return int(next(line for line in head.splitlines() if line.startswith("element vertex")).split()[-1])


def test_pointcloud_has_one_point_per_processing_pixel_at_the_mapped_depth(models, image_file, tmp_path):
    out = tmp_path / "out"
    near, far, fov = 5.0, 6.0, 50.0                    # random tiny-model depth spans far beyond [0, 1]
    assert predict(models, image_file, "--out", out, "--pointcloud", "--near", near, "--far", far,
                   "--fov", fov) == 0
    raw = torch.from_numpy(np.load(out / "photo_depth.npy")).double()            # (h, w) PPD log-depth
    h, w = raw.shape
    assert ply_vertex_count(out / "photo_points.ply") == h * w == 64 * 96
    xyz, rgb = read_ply(out / "photo_points.ply")
    z = torch.expm1(math.log1p(near) + raw * (math.log1p(far) - math.log1p(near)))
    want = scenes.rays(h, w, fov) * z[..., None]                                  # OpenCV frame, pixel centres
    # float32 all the way (depth .npy, expm1 of an argument |a + raw*b| <~ 20 whose relative error is
    # |arg|*EPS ~ 2.4e-6, rays, PLY floats): rtol/atol 1e-4 (~840 EPS) holds that; 1 degree of fov or a wrong
    # near/far moves points by > 1%
    assert torch.allclose(xyz.double(), (want * torch.tensor([1.0, -1.0, -1.0])).reshape(-1, 3), rtol=1e-4,
                          atol=1e-4)
    resized = imaging.resize_keep_aspect(images.load_image(image_file), 6144)[0]     # what the model saw
    assert torch.equal(rgb, (resized.permute(1, 2, 0).reshape(-1, 3) * 255).round().long())


def test_pointcloud_refuses_a_range_that_puts_points_behind_the_camera(models, image_file, tmp_path, capsys):
    assert predict(models, image_file, "--out", tmp_path / "o", "--pointcloud", "--near", "0.01",
                   "--far", "100") == 1                  # the item fails (exit 1), reported in the summary
    assert "raise near above" in capsys.readouterr().out
    assert not any((tmp_path / "o").iterdir())                  # nothing written half-way, not even the depth
