"""MoGe-2 geometry nodes with a tiny complete MoGe-2 in models/ppd: outputs, the metric point cloud, bad input.

The nodes run the pack's own copy of the engine, so its errors are matched by their base class ValueError
(PPDError derives from it) and their message.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import scenes
from mesh_files import read_ply
from pack_nodes import node_classes
from tiny_models import tiny_dit_state_dict, tiny_moge2_full_checkpoint

NAME = "moge2_vitl_normal.pt"


@pytest.fixture()
def m(pack, comfy_env):
    return node_classes(pack)


def geometry_of(m, image, name=NAME, **options):
    model, = m["PPD_LoadGeometryModel"]().load(name)
    args = {"resolution_level": 0, "fov_x": 0.0, "apply_mask": True,
            "normal_convention": "ControlNet NormalBae (R left, G up, B toward camera)", **options}
    return m["PPD_MoGe2Geometry"]().estimate(model, image, **args)


def test_geometry_node_outputs(m):
    image = torch.rand(2, 40, 60, 3)
    packet, normal_map, depth, mask, summary = geometry_of(m, image)
    assert packet["depth"].shape == (2, 40, 60) and packet["intrinsics"].shape == (2, 3, 3)
    assert packet["normal"].shape == (2, 40, 60, 3) and packet["mask"].dtype == torch.bool
    assert normal_map.shape == (2, 40, 60, 3) and 0 <= float(normal_map.min()) and float(normal_map.max()) <= 1
    # NormalBae colours: rgb = (1 - n) / 2 of the OpenCV-frame unit normal (at valid pixels).
    valid = packet["mask"]
    assert torch.allclose(normal_map[valid], (1 - packet["normal"][valid]) / 2, atol=1e-6)
    assert depth.shape == (2, 40, 60, 3) and torch.equal(depth[..., 0][valid], packet["depth"][valid])
    assert torch.equal(mask, valid.float())
    assert summary.count("\n") == 1 and "normals: yes" in summary and "FOV" in summary


def test_known_fov_sets_the_camera(m):
    packet, *_ = geometry_of(m, torch.rand(1, 40, 60, 3), fov_x=70.0)
    fx = float(packet["intrinsics"][0, 0, 0])                      # normalised by the width
    assert math.degrees(2 * math.atan(0.5 / fx)) == pytest.approx(70.0, abs=1e-3)


def test_model_without_normal_head_says_so(m, comfy_env, tmp_path):
    folder = Path(comfy_env.folder_paths.get_folder_paths("ppd")[-1])
    torch.save(tiny_moge2_full_checkpoint(normal_head=False), folder / "moge2_no_normal.pt")
    packet, normal_map, *_, summary = geometry_of(m, torch.rand(1, 40, 60, 3), "moge2_no_normal.pt")
    assert packet["normal"] is None and float(normal_map.abs().max()) == 0
    assert "no normal head" in summary


def test_wrong_files_are_refused_with_a_message(m, comfy_env):
    folder = Path(comfy_env.folder_paths.get_folder_paths("ppd")[-1])
    moge1 = {"model_config": {"encoder": "dinov2_vitl14"},
             "model": {"backbone.patch_embed.proj.weight": torch.zeros(8, 3, 14, 14),
                       "head.projects.0.weight": torch.zeros(4, 8, 1, 1)}}
    torch.save(moge1, folder / "moge1.pt")
    torch.save(tiny_dit_state_dict(), folder / "dit.pth")
    with pytest.raises(ValueError, match="MoGe-1.*relative geometry"):
        m["PPD_LoadGeometryModel"]().load("moge1.pt")
    with pytest.raises(ValueError, match="PPD DiT"):
        m["PPD_LoadGeometryModel"]().load("dit.pth")
    with pytest.raises(ValueError, match="semantic encoder"):
        m["PPD_LoadGeometryModel"]().load("depth_anything_v2_vitl.pth")


def test_no_valid_pixel_is_a_clear_error(m, comfy_env):
    folder = Path(comfy_env.folder_paths.get_folder_paths("ppd")[-1])
    ckpt = tiny_moge2_full_checkpoint()
    ckpt["model"]["mask_head.output_blocks.4.bias"] = torch.full((1,), -1e4)
    torch.save(ckpt, folder / "moge2_blind.pt")
    with pytest.raises(ValueError, match="no valid pixel"):
        geometry_of(m, torch.rand(1, 40, 60, 3), "moge2_blind.pt")


def to_cloud(m, packet, depth, **options):
    args = {"depth_kind": "PPD log-depth", "fov_deg": 60.0, "focal_px": 0.0, "near": 1.0, "far": 10.0,
            "stride": 1, "discontinuity_threshold": 0.0, "outlier_filter": False, **options}
    return m["PPD_DepthToPointCloud"]().unproject(**args, depth_map=depth, geometry=packet)


def analytic_packet(scene: str = "sphere") -> tuple[dict, torch.Tensor, torch.Tensor]:
    """A PPD_GEOMETRY of an analytic scene (true metres, the true camera) and its PPD log-depth."""
    truth = scenes.SCENES[scene]()
    f = scenes.focal()
    k = torch.tensor([[f / scenes.WIDTH, 0, 0.5], [0, f / scenes.HEIGHT, 0.5], [0, 0, 1]])
    packet = {"depth": truth.float()[None], "mask": torch.ones(1, *truth.shape, dtype=torch.bool),
              "intrinsics": k[None], "normal": None, "kind": "moge2"}
    return packet, scenes.to_ppd(truth)[None], truth


def test_point_cloud_from_geometry_is_metric_with_the_true_camera(m):
    packet, ppd, truth = analytic_packet()
    points, summary = to_cloud(m, packet, ppd)
    cloud = points["frames"][0]["cloud"]
    expected = (scenes.rays() * truth[..., None]).float().reshape(-1, 3)
    # float32 log-depth (6e-8 of ~1) through exp, times depths <= 4 m: well under 1e-4 m.
    assert (cloud.points - expected).norm(dim=-1).max() < 1e-4
    assert "focal" in summary


def test_outlier_filter_option_drops_only_a_few_points(m):
    packet, ppd, _ = analytic_packet("slanted plane")
    full = to_cloud(m, packet, ppd)[0]["frames"][0]["cloud"]
    kept = to_cloud(m, packet, ppd, outlier_filter=True)[0]["frames"][0]["cloud"]
    assert 0 < kept.points.shape[0] < full.points.shape[0]


def test_point_cloud_refuses_useless_geometry(m):
    packet, ppd, _ = analytic_packet()
    zero = {**packet, "depth": torch.zeros_like(packet["depth"])}
    with pytest.raises(ValueError, match="zero, negative or infinite"):
        to_cloud(m, zero, ppd)
    inf = {**packet, "depth": torch.full_like(packet["depth"], math.inf)}
    with pytest.raises(ValueError, match="zero, negative or infinite"):
        to_cloud(m, inf, ppd)
    bad_k = {**packet, "intrinsics": torch.full_like(packet["intrinsics"], math.nan)}
    with pytest.raises(ValueError, match="intrinsics are not usable"):
        to_cloud(m, bad_k, ppd)
    with pytest.raises(ValueError, match="PPD MoGe-2 Geometry"):
        to_cloud(m, {"depth": packet["depth"]}, ppd)


def test_metric_cloud_saves_and_reads_back(m, comfy_env):
    packet, ppd, truth = analytic_packet("box")
    points, _ = to_cloud(m, packet, ppd)
    _, ply, _ = m["PPD_SavePointCloud"]().save(points, "ppd/metric", True, True, False, 0.04)["result"]
    xyz, _ = read_ply(Path(comfy_env.folder_paths.get_output_directory()) / ply)
    assert xyz.shape[0] == truth.numel() and float(-xyz[:, 2].max()) == pytest.approx(2.0, rel=1e-4)
