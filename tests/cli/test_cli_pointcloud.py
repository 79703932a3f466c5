"""`predict --pointcloud` end to end on tiny random checkpoints: the PLY matches the saved raw depth."""
from __future__ import annotations

import math
import re

import numpy as np
import torch

import scenes
from cli_run import predict
from comfyui_ppd import imaging
from comfyui_ppd.io import images
from mesh_files import ply_vertex_count, read_ply


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


def test_pixels_mapped_behind_the_camera_are_left_out_and_counted(models, image_file, tmp_path, capsys):
    """As in the nodes: a near/far range that maps some pixels to depth <= 0 drops those pixels (said on stderr)
    instead of failing the image; the depth files are written as usual."""
    out = tmp_path / "o"
    assert predict(models, image_file, "--out", out, "--pointcloud", "--near", "0.01", "--far", "100") == 0
    raw = torch.from_numpy(np.load(out / "photo_depth.npy")).double()
    arg = math.log1p(0.01) + raw * (math.log1p(100) - math.log1p(0.01))
    behind = int((torch.expm1(arg) <= 0).sum())          # what log(1+d) maps to a depth <= 0
    assert 0 < behind < raw.numel()                      # random tiny-model depth reaches below PPD's near end
    said = re.search(r"([\d,]+) of ([\d,]+) pixels left out", capsys.readouterr().err)
    assert said and int(said[2].replace(",", "")) == raw.numel()
    dropped = int(said[1].replace(",", ""))
    assert ply_vertex_count(out / "photo_points.ply") == raw.numel() - dropped
    assert abs(dropped - behind) <= 2                    # float32 in the engine vs float64 here, at the boundary
    assert (out / "photo_depth16.png").is_file() and (out / "photo_depth_color.png").is_file()
