"""Node outputs and feedback: big saves and previews, point clouds that drop pixels behind the camera, Cancel,
and what the sampler reports (issue 9, items 5-6)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pack_nodes import display_names, load, node, node_classes


# --- 5. big images and slow saves ----------------------------------------------------------------------------
def big_packet(h=96, w=128, input_size=(1500, 2000)):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return {"depth": (0.7 * yy + 0.3 * xx)[None, None], "spread": None, "image": torch.rand(1, 3, h, w),
            "input_size": input_size, "kind": "ppd"}


def test_save_keeps_raw_depth_at_the_processing_size_and_previews_small(pack, comfy_env):
    out = node(pack, "PPD_SaveDepth").save(big_packet(), "big/d", True, "near = white", True, True, "input")
    folder = Path(comfy_env.folder_paths.get_output_directory()) / "big"
    assert sorted(p.name for p in folder.iterdir()) == ["d_00001_.png", "d_00001_128x96.exr", "d_00001_128x96.npy"]
    assert np.load(folder / "d_00001_128x96.npy").shape == (96, 128)
    assert Image.open(folder / "d_00001_.png").size == (2000, 1500)
    preview, = out["ui"]["images"]
    shown = Image.open(Path(comfy_env.folder_paths.get_temp_directory()) / preview["subfolder"] / preview["filename"])
    assert max(shown.size) <= 1024
    text = out["ui"]["text"][0]
    assert "processed 128 x 96 (W x H) from a 2000 x 1500 input" in text
    assert "d_00001_.png: 2000 x 1500" in text and "d_00001_128x96.npy: 128 x 96" in text
    assert " MB" in text and " kB" in text


def test_raw_size_input_upsamples_on_request(pack, comfy_env):
    node(pack, "PPD_SaveDepth").save(big_packet(input_size=(150, 200)), "up/d", False, "near = white", True,
                                     False, "processing", raw_size="input")
    folder = Path(comfy_env.folder_paths.get_output_directory()) / "up"
    assert np.load(folder / "d_00001_200x150.npy").shape == (150, 200)


@pytest.mark.parametrize("orientation", ["near = white", "far = white"])
def test_preview_shows_the_grey_png_as_saved(pack, comfy_env, orientation):
    out = node(pack, "PPD_SaveDepth").save(big_packet(input_size=(96, 128)), "look/d", True, orientation, False,
                                           False, "input")
    saved = np.asarray(Image.open(Path(comfy_env.folder_paths.get_output_directory()) / "look" / "d_00001_.png"),
                       dtype=np.float64) / 65535
    preview, = out["ui"]["images"]
    shown = np.asarray(Image.open(Path(comfy_env.folder_paths.get_temp_directory()) / preview["subfolder"]
                                  / preview["filename"]), dtype=np.float64) / 255
    assert shown.shape == (*saved.shape, 3) and np.all(shown[..., 0] == shown[..., 2])      # grey, not a colour map
    assert np.abs(shown[..., 0] - saved).max() <= 0.5 / 255 + 1 / 65535                  # 8-bit rounding of the PNG


def test_display_names_say_ppd_once_and_keys_are_unchanged(pack):
    names = display_names(pack)
    assert names["PPD_DepthSampler"] == "PPD Depth Sampler" and names["PPD_LoadModel"] == "Load PPD Model"
    assert names["PPD_SavePointCloud"] == "Save Point Cloud (PPD)"
    assert all(n.count("PPD") == 1 for n in names.values())


# --- 3. point clouds and edge metrics drop pixels behind the camera instead of refusing the image -------------
def ramp(h=32, w=48, lo=-1.0, hi=1.0):
    return torch.linspace(lo, hi, w).expand(h, w)[None].clone()            # (1,h,w) PPD log-depth


def test_pixels_behind_the_camera_are_dropped_and_counted(pack, comfy_env):
    import math
    depth = ramp()
    near, far = 1.0, 10.0
    mapped = math.log1p(near) + depth * (math.log1p(far) - math.log1p(near))   # log(1 + metres)
    behind = int((mapped <= 0).sum())
    assert 0 < behind < depth.numel() // 2
    points, summary = node(pack, "PPD_DepthToPointCloud").unproject(
        "PPD log-depth", 60.0, 0.0, near, far, 1, 0.0, depth_map=depth)
    frame, = points["frames"]
    assert frame["cloud"].points.shape[0] == depth.numel() - behind and frame["dropped"] == behind
    assert f"{behind:,} pixels dropped" in summary and bool((frame["cloud"].points[:, 2] > 0).all())
    out = node(pack, "PPD_SavePointCloud").save(points, "drop/p", True, True, True, 0.0)    # the mesh too
    assert out["result"][2].endswith("mesh.glb")
    measured = node(pack, "PPD_EdgeMetricPreview").measure("PPD log-depth", 60.0, 0.0, near, far, depth_map=depth)
    assert f"{behind:,} pixels left out" in measured["ui"]["text"][0]
    assert bool(torch.isfinite(measured["result"][0]).all())                   # the heat map has no NaN


def test_nearly_nothing_left_is_still_refused(pack, comfy_env):
    with pytest.raises(ValueError, match="almost nothing is left.*raise near above"):
        node(pack, "PPD_DepthToPointCloud").unproject("PPD log-depth", 60.0, 0.0, 1.0, 10.0, 1, 0.0,
                                                      depth_map=ramp(lo=-3.0, hi=-0.42))


# --- 6. cancel and feedback ----------------------------------------------------------------------------------
def test_cancel_in_an_ensemble_stops_within_one_block(pack, comfy_env, cancel_at_check):
    model, _ = load(pack, "ppd.pth", "depth_anything_v2_vitl.pth", "auto")["result"]
    sem, = node(pack, "PPD_SemanticEncoder").encode(model, torch.rand(1, 32, 32, 3), "custom long side", 64)
    ran = []
    hooks = [b.register_forward_hook(lambda *_: ran.append(1)) for b in model.engine.dit.blocks]
    cancel_at_check(2)                                          # Cancel just before the 2nd check
    try:
        with pytest.raises(comfy_env.InterruptProcessingException):
            node(pack, "PPD_DepthSampler").sample(model, sem, 4, 0, ensemble_size=4)
    finally:
        for h in hooks:
            h.remove()
    assert len(ran) == 1                 # one DiT block ran; before, a whole step of all 4 members ran first
    assert not model.engine.dit.blocks[0]._forward_pre_hooks                 # the checks are removed again


def test_edge_metric_preview_is_an_output_node_with_a_preview(pack, comfy_env):
    cls = node_classes(pack)["PPD_EdgeMetricPreview"]
    assert cls.OUTPUT_NODE is True
    out = cls().measure("depth (far = larger)", 60.0, 0.0, 1.0, 10.0, depth_map=ramp(lo=1.0, hi=3.0))
    assert out["ui"]["images"][0]["type"] == "temp" and out["ui"]["text"][0] == out["result"][-1]


def test_save_point_cloud_shows_files_points_and_a_preview(pack, comfy_env):
    points, _ = node(pack, "PPD_DepthToPointCloud").unproject(
        "depth (far = larger)", 60.0, 0.0, 1.0, 10.0, 2, 0.0, depth_map=ramp(lo=1.0, hi=3.0))
    out = node(pack, "PPD_SavePointCloud").save(points, "pc/p", True, True, False, 0.04)
    text = out["ui"]["text"][0]
    assert "384 points (48 x 32 grid, stride 2)" in text and "p_00001_.ply (" in text and "p_00001_.glb (" in text
    shot = out["ui"]["images"][0]
    img = Image.open(Path(comfy_env.folder_paths.get_temp_directory()) / shot["subfolder"] / shot["filename"])
    assert img.size == (512, 256)


def test_cloud_views_front_keeps_the_nearest_and_top_the_highest(pack):
    views = pack.comfyui_ppd.preview.cloud_views
    cloud = pack.comfyui_ppd.depth3d.PointCloud(
        torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0], [1.0, 1.0, 1.0], [1.0, 0.0, 1.0]]),
        torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]]), torch.zeros(4, 2), 2, 2)
    img = views(cloud, size=12)                 # 0 m -> pixel round(0.55) = 1, 1 m -> round(0.55 + 9.9) = 10
    front, top = img[:, :12], img[:, 12:]
    assert front[1, 1].tolist() == [1.0, 0, 0]             # the red point at z=1 hides the green one at z=2
    assert front[10, 10].tolist() == [0, 0, 1.0] and front[1, 10].tolist() == [1.0, 1.0, 1.0]
    assert top[1, 1].tolist() == [0, 1.0, 0] and top[10, 1].tolist() == [1.0, 0, 0]   # far side (z=2) up
    assert top[10, 10].tolist() == [1.0, 1.0, 1.0]         # white (y=0) is above blue (y=1): white wins


def test_sampler_says_what_size_was_processed_and_warns_for_huge_inputs(pack, comfy_env):
    model, _ = load(pack, "ppd.pth", "depth_anything_v2_vitl.pth", "auto")["result"]
    sampler = node(pack, "PPD_DepthSampler")
    sem, = node(pack, "PPD_SemanticEncoder").encode(model, torch.rand(1, 48, 64, 3), "custom long side", 64)
    text = sampler.sample(model, sem, 1, 0)["ui"]["text"][0]
    assert "processed 64 x 48 (W x H) for a 64 x 48 input" in text and "scale the image down" not in text
    sem, = node(pack, "PPD_SemanticEncoder").encode(model, torch.rand(1, 150, 200, 3), "custom long side", 64)
    text = sampler.sample(model, sem, 1, 0)["ui"]["text"][0]
    assert "processed 64 x 48 (W x H) for a 200 x 150 input" in text and "scale the image down" in text
